package main

// Datastores: -nfs makes the VMs' datastore an NFS export every host mounts; CreateNasDatastore
// of an existing export mounts it on the calling host (vcsim would make a new local datastore);
// RegisterVM_Task and CloneVM_Task onto a host that does not mount the datastore are refused
// (vcsim panics there, holding the folder's lock for good).

import (
	"fmt"
	"net/http"
	"path"
	"sort"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// nfsMode is set by -nfs.
var nfsMode bool

const nfsServer = "nfs.am.test"

func hostMount(ref types.ManagedObjectReference, url string) types.DatastoreHostMount {
	return types.DatastoreHostMount{
		Key: ref,
		MountInfo: types.HostMountInfo{
			Path:       url,
			AccessMode: string(types.HostMountModeReadWrite),
			Mounted:    types.NewBool(true),
			Accessible: types.NewBool(true),
		},
	}
}

// exportDatastores turns every datastore into an NFS export of nfs.am.test:/export/<name>
// (url kept: its local directory) with every host that sees it in its mount list.
func exportDatastores() error {
	dss := simulator.Map.All("Datastore")
	if len(dss) == 0 {
		return fmt.Errorf("no datastore")
	}
	type hostDS struct {
		ref  types.ManagedObjectReference
		name string
		ds   []types.ManagedObjectReference
	}
	var hosts []hostDS
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		simulator.Map.WithLock(h, func() {
			hosts = append(hosts, hostDS{h.Self, h.Name, append([]types.ManagedObjectReference(nil), h.Datastore...)})
		})
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].name < hosts[j].name })
	for _, e := range dss {
		ds := e.(*simulator.Datastore)
		simulator.Map.WithLock(ds, func() {
			info := *ds.Info.GetDatastoreInfo()
			var mounts []types.DatastoreHostMount
			for _, h := range hosts {
				if simulator.FindReference(h.ds, ds.Self) != nil {
					mounts = append(mounts, hostMount(h.ref, info.Url))
				}
			}
			nas := &types.NasDatastoreInfo{
				DatastoreInfo: info,
				Nas: &types.HostNasVolume{
					HostFileSystemVolume: types.HostFileSystemVolume{
						Type:     "NFS",
						Name:     ds.Name,
						Capacity: ds.Summary.Capacity,
					},
					RemoteHost:      nfsServer,
					RemotePath:      "/export/" + ds.Name,
					RemoteHostNames: []string{nfsServer},
				},
			}
			simulator.Map.Update(ds, []types.PropertyChange{
				{Name: "info", Val: nas},
				{Name: "summary.type", Val: "NFS"},
				{Name: "host", Val: mounts},
			})
		})
	}
	return nil
}

// hostOfDatastoreSystem finds the host whose HostDatastoreSystem is ref.
func hostOfDatastoreSystem(ref string) *simulator.HostSystem {
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		var ok bool
		simulator.Map.WithLock(h, func() {
			ok = h.ConfigManager.DatastoreSystem != nil && h.ConfigManager.DatastoreSystem.Value == ref
		})
		if ok {
			return h
		}
	}
	return nil
}

// findExport finds the NAS datastore exported as remoteHost:remotePath.
func findExport(remoteHost, remotePath string) *simulator.Datastore {
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		var ok bool
		simulator.Map.WithLock(ds, func() {
			if nas, is := ds.Info.(*types.NasDatastoreInfo); is && nas.Nas != nil {
				ok = nas.Nas.RemoteHost == remoteHost && path.Clean(nas.Nas.RemotePath) == path.Clean(remotePath)
			}
		})
		if ok {
			return ds
		}
	}
	return nil
}

// createNasDatastore mounts an existing export on the host whose datastore system is called.
// It answers DuplicateName when the host mounts it already, NotFound (with -nfs) when nothing
// is exported there; without -nfs an unknown export is left to vcsim (a new local datastore).
func createNasDatastore(w http.ResponseWriter, dssRef string, args map[string]string) bool {
	h := hostOfDatastoreSystem(dssRef)
	if h == nil {
		return false
	}
	remoteHost, remotePath := args["spec/remoteHost"], args["spec/remotePath"]
	ds := findExport(remoteHost, remotePath)
	if ds == nil {
		if !nfsMode {
			return false
		}
		writeFault(w, &rule{Fault: "NotFound", Message: fmt.Sprintf("No NFS export %s:%s", remoteHost, remotePath)})
		return true
	}
	var url string
	simulator.Map.WithLock(ds, func() { url = ds.Info.GetDatastoreInfo().Url })
	dup := false
	var parent, dssObj *types.ManagedObjectReference
	simulator.Map.WithLock(h, func() {
		if simulator.FindReference(h.Datastore, ds.Self) != nil {
			dup = true
			return
		}
		list := append(append([]types.ManagedObjectReference(nil), h.Datastore...), ds.Self)
		simulator.Map.Update(h, []types.PropertyChange{{Name: "datastore", Val: list}})
		parent, dssObj = h.Parent, h.ConfigManager.DatastoreSystem
	})
	if dup {
		writeFault(w, &rule{Fault: "DuplicateName",
			Message: fmt.Sprintf("The host %s already mounts %s:%s as datastore '%s'", h.Name, remoteHost, remotePath, ds.Name),
			Detail:  fmt.Sprintf(`<name>%s</name><object type="Datastore">%s</object>`, xmlText(ds.Name), xmlText(ds.Self.Value))})
		return true
	}
	if dssObj != nil {
		if d, ok := simulator.Map.Get(*dssObj).(*simulator.HostDatastoreSystem); ok {
			simulator.Map.WithLock(d, func() {
				if simulator.FindReference(d.Datastore, ds.Self) == nil {
					list := append(append([]types.ManagedObjectReference(nil), d.Datastore...), ds.Self)
					simulator.Map.Update(d, []types.PropertyChange{{Name: "datastore", Val: list}})
				}
			})
		}
	}
	simulator.Map.WithLock(ds, func() {
		mounts := append([]types.DatastoreHostMount(nil), ds.Host...)
		for _, m := range mounts {
			if m.Key == h.Self {
				return
			}
		}
		mounts = append(mounts, hostMount(h.Self, url))
		simulator.Map.Update(ds, []types.PropertyChange{{Name: "host", Val: mounts}})
	})
	if parent != nil {
		addDatastore := func(obj mo.Reference, field *[]types.ManagedObjectReference) {
			simulator.Map.WithLock(obj, func() {
				if simulator.FindReference(*field, ds.Self) == nil {
					list := append(append([]types.ManagedObjectReference(nil), *field...), ds.Self)
					simulator.Map.Update(obj, []types.PropertyChange{{Name: "datastore", Val: list}})
				}
			})
		}
		switch p := simulator.Map.Get(*parent).(type) {
		case *simulator.ClusterComputeResource:
			addDatastore(p, &p.Datastore)
		case *mo.ComputeResource:
			addDatastore(p, &p.Datastore)
		}
	}
	writeMorefResponse(w, "CreateNasDatastore", ds.Self)
	return true
}

// hostSees says whether host ref mounts a datastore named dsName.
func hostSees(ref types.ManagedObjectReference, dsName string) (bool, string) {
	h, ok := simulator.Map.Get(ref).(*simulator.HostSystem)
	if !ok {
		return true, ""
	}
	var list []types.ManagedObjectReference
	var name string
	simulator.Map.WithLock(h, func() {
		list = append(list, h.Datastore...)
		name = h.Name
	})
	for _, d := range list {
		if ds, ok := simulator.Map.Get(d).(*simulator.Datastore); ok && ds.Name == dsName {
			return true, name
		}
	}
	return false, name
}

func invalidDatastore(dsName, hostName string) (types.BaseMethodFault, string) {
	f := &types.InvalidDatastore{Name: dsName}
	for _, e := range simulator.Map.All("Datastore") {
		if ds := e.(*simulator.Datastore); ds.Name == dsName {
			ref := ds.Self
			f.Datastore = &ref
		}
	}
	return f, fmt.Sprintf("Datastore '%s' is not accessible from host '%s'", dsName, hostName)
}

// refuseRegister fails RegisterVM_Task (as a failed task) when the target host, or every host of
// the target pool, does not mount the .vmx's datastore.
func refuseRegister(w http.ResponseWriter, method, folder string, args map[string]string) bool {
	var p object.DatastorePath
	if !p.FromString(args["path"]) {
		return false
	}
	var hosts []types.ManagedObjectReference
	if ref := args["host"]; ref != "" {
		hosts = []types.ManagedObjectReference{{Type: "HostSystem", Value: ref}}
	} else if ref := args["pool"]; ref != "" {
		pool, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "ResourcePool", Value: ref}).(*simulator.ResourcePool)
		if !ok {
			return false
		}
		var owner types.ManagedObjectReference
		simulator.Map.WithLock(pool, func() { owner = pool.Owner })
		switch cr := simulator.Map.Get(owner).(type) {
		case *simulator.ClusterComputeResource:
			simulator.Map.WithLock(cr, func() { hosts = append(hosts, cr.Host...) })
		case *mo.ComputeResource:
			simulator.Map.WithLock(cr, func() { hosts = append(hosts, cr.Host...) })
		default:
			return false
		}
	} else {
		return false
	}
	var hostName string
	for _, h := range hosts {
		ok, name := hostSees(h, p.Datastore)
		if ok {
			return false
		}
		hostName = name
	}
	fault, msg := invalidDatastore(p.Datastore, hostName)
	writeTaskResponse(w, method, failTask(types.ManagedObjectReference{Type: "Folder", Value: folder}, "registerVm", fault, msg))
	return true
}

// refuseClone fails CloneVM_Task when spec.location.host does not mount the clone's datastore.
func refuseClone(w http.ResponseWriter, method, vmRef string, args map[string]string) bool {
	host := args["spec/location/host"]
	if host == "" {
		return false
	}
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: vmRef}).(*simulator.VirtualMachine)
	if !ok {
		return false
	}
	var dsName string
	if ref := args["spec/location/datastore"]; ref != "" {
		if ds, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Datastore", Value: ref}).(*simulator.Datastore); ok {
			dsName = ds.Name
		}
	} else {
		simulator.Map.WithLock(vm, func() {
			var p object.DatastorePath
			if vm.Config != nil && p.FromString(vm.Config.Files.VmPathName) {
				dsName = p.Datastore
			}
		})
	}
	if dsName == "" {
		return false
	}
	ok, name := hostSees(types.ManagedObjectReference{Type: "HostSystem", Value: host}, dsName)
	if ok {
		return false
	}
	fault, msg := invalidDatastore(dsName, name)
	writeTaskResponse(w, method, failTask(vm, "cloneVm", fault, msg))
	return true
}
