package main

// The liveness model: the truth behind vCenter's view. Hosts are alive or not, partitioned from
// vCenter or not, with their management and guest networks up or down; VMs run where the model
// says (powered on in vcsim on a live host, or ghosts on a partitioned host). A reconcile loop
// gives every host and VM its address, keeps VMware Tools' view in step with the power state, and
// opens listeners and keeps lock files for what runs (runtime.go).

import (
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// theWorld is the model the SOAP wrapper and the control endpoint share (nil before start).
var theWorld *world

type hostModel struct {
	ref         types.ManagedObjectReference
	name        string
	mgmtIP      string
	alive       bool // the hypervisor runs
	partitioned bool // cut off from vCenter (but alive)
	mgmtUp      bool // the management network answers
	guestsUp    bool // the guests' networks on this host answer
	down        bool // crashed or powered off since the last heal or revive
}

// ghost is a VM that kept running on a partitioned host, whatever vCenter does meanwhile.
type ghost struct {
	key   string // normalized .vmx path
	vmx   string // the path as it was registered
	name  string
	host  types.ManagedObjectReference
	since time.Time
}

type vmSeen struct {
	power types.VirtualMachinePowerState
}

// hostSnap and vmSnap are what the reconcile loop reads from vcsim, one object lock at a time.
type hostSnap struct {
	ref        types.ManagedObjectReference
	name       string
	vnicIP     string
	mgrIP      string // vmk0 as the management candidate of config.virtualNicManagerInfo
	conn       types.HostSystemConnectionState
	vms        []types.ManagedObjectReference
	datastores []types.ManagedObjectReference
}

type vmSnap struct {
	ref     types.ManagedObjectReference
	name    string
	vmx     string // as registered
	key     string // normalized
	power   types.VirtualMachinePowerState
	host    types.ManagedObjectReference
	guestIP string
	netIP   string // guest.net[0].ipAddress[0]
	hasNet  bool
	ready   bool // fully created (listed by a host)
}

// instance is one running copy of a VM: its .vmx on a host.
type instance struct {
	key   string
	vmx   string
	name  string
	host  types.ManagedObjectReference
	ghost bool
}

type world struct {
	mu        sync.Mutex
	guestPort int
	mgmtPort  int

	hosts     map[types.ManagedObjectReference]*hostModel
	hostIPs   map[string]types.ManagedObjectReference // management address in use -> host
	nextHost  int
	vmIPs     map[string]string // normalized .vmx -> guest address
	nextVM    int
	seen      map[types.ManagedObjectReference]*vmSeen
	ghosts    map[string]*ghost // by normalized .vmx
	guestDown map[string]bool   // guest networks down, by normalized .vmx

	listeners map[string]*listener // by address
	listenErr map[string]string    // address -> last error
	locks     map[string]*lockFile // by normalized .vmx
	lockErr   map[string]string    // normalized .vmx -> last error
	dsURL     map[string]string    // datastore name -> local directory

	// the last reconcile's view
	lastHosts []hostSnap
	lastVMs   []vmSnap
	lastInst  []instance

	watch watcher
	stop  chan struct{}
}

func newWorld(guestPort, mgmtPort int) *world {
	w := &world{
		guestPort: guestPort,
		mgmtPort:  mgmtPort,
		hosts:     map[types.ManagedObjectReference]*hostModel{},
		hostIPs:   map[string]types.ManagedObjectReference{},
		vmIPs:     map[string]string{},
		seen:      map[types.ManagedObjectReference]*vmSeen{},
		ghosts:    map[string]*ghost{},
		guestDown: map[string]bool{},
		listeners: map[string]*listener{},
		listenErr: map[string]string{},
		locks:     map[string]*lockFile{},
		lockErr:   map[string]string{},
		dsURL:     map[string]string{},
		stop:      make(chan struct{}),
	}
	simulator.Map.AddHandler(&w.watch)
	return w
}

// watcher is a registry handler that notes changes to hosts, VMs and datastores, so the loop
// reads vcsim again only when something changed (and every 2 s regardless).
type watcher struct{ dirty int32 }

func (*watcher) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "AmVcsimWatcher", Value: "am-vcsim-watcher"}
}

func (w *watcher) mark(ref types.ManagedObjectReference) {
	switch ref.Type {
	case "VirtualMachine", "HostSystem", "Datastore", "HostDatastoreSystem", "ClusterComputeResource", "ComputeResource":
		atomic.StoreInt32(&w.dirty, 1)
	}
}

func (w *watcher) PutObject(o mo.Reference)                              { w.mark(o.Reference()) }
func (w *watcher) UpdateObject(o mo.Reference, _ []types.PropertyChange) { w.mark(o.Reference()) }
func (w *watcher) RemoveObject(ref types.ManagedObjectReference)         { w.mark(ref) }

func (w *world) loop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			if atomic.SwapInt32(&w.watch.dirty, 0) == 1 || time.Since(last) >= 2*time.Second {
				w.reconcile()
				last = time.Now()
			} else {
				w.touchLocks()
			}
		}
	}
}

// reconcileIfDirty reconciles when vcsim changed a host, VM or datastore since the last time.
func (w *world) reconcileIfDirty() {
	if atomic.SwapInt32(&w.watch.dirty, 0) == 1 {
		w.reconcile()
	}
}

// shutdown closes the listeners and removes the lock files.
func (w *world) shutdown() {
	close(w.stop)
	w.mu.Lock()
	defer w.mu.Unlock()
	for addr, l := range w.listeners {
		l.close()
		delete(w.listeners, addr)
	}
	for key, l := range w.locks {
		_ = os.Remove(l.path)
		delete(w.locks, key)
	}
}

var normCache = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// normVmx is the key of a .vmx path: "[ds] dir/x.vmx" with the path cleaned.
func normVmx(vmx string) string {
	normCache.Lock()
	defer normCache.Unlock()
	if k, ok := normCache.m[vmx]; ok {
		return k
	}
	k := vmx
	var p object.DatastorePath
	if p.FromString(vmx) {
		k = fmt.Sprintf("[%s] %s", p.Datastore, path.Clean(p.Path))
	}
	if len(normCache.m) > 100000 {
		normCache.m = map[string]string{}
	}
	normCache.m[vmx] = k
	return k
}

// addr returns 127.<net>.X.Y for index n (Y from 1 to 254).
func addr(netOctet, n int) string {
	return fmt.Sprintf("127.%d.%d.%d", netOctet, (n/254)%256, n%254+1)
}

func (w *world) reconcile() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reconcileLocked()
}

// reconcileLocked reads vcsim, applies addresses and guest state, and brings listeners and locks
// in line with what runs. w.mu is held; vcsim object locks are taken one at a time.
func (w *world) reconcileLocked() {
	atomic.StoreInt32(&w.watch.dirty, 0)
	hosts := snapshotHosts()
	w.syncHosts(hosts)
	vms := snapshotVMs(hosts)
	w.syncVMs(vms)
	w.syncDatastores()
	inst := w.instances(vms)
	w.lastHosts, w.lastVMs, w.lastInst = hosts, vms, inst
	w.syncListeners(inst)
	w.syncLocks(inst)
}

func snapshotHosts() []hostSnap {
	var out []hostSnap
	// The VMs of every host by one walk of the VMs (a walk per host was hosts x VMs locked reads
	// at every reconcile: at 1,000 hosts and 10,000 VMs, seconds of vcsim's CPU per change).
	on := vmsByHost()
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		var s hostSnap
		simulator.Map.WithLock(h.Self, func() { // the moref: vcsim's locker copies the object otherwise
			s = hostSnap{ref: h.Self, name: h.Name, conn: h.Runtime.ConnectionState,
				datastores: append([]types.ManagedObjectReference(nil), h.Datastore...)}
			if h.Config != nil && h.Config.Network != nil && len(h.Config.Network.Vnic) > 0 && h.Config.Network.Vnic[0].Spec.Ip != nil {
				s.vnicIP = h.Config.Network.Vnic[0].Spec.Ip.IpAddress
				s.mgrIP = s.vnicIP
				if m := h.Config.VirtualNicManagerInfo; m != nil {
					for _, nc := range m.NetConfig {
						for _, v := range nc.CandidateVnic {
							if nc.NicType == "management" && v.Device == h.Config.Network.Vnic[0].Device && v.Spec.Ip != nil {
								s.mgrIP = v.Spec.Ip.IpAddress
							}
						}
					}
				}
			}
		})
		s.vms = on[h.Self]
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func snapshotVMs(hosts []hostSnap) []vmSnap {
	listed := map[types.ManagedObjectReference]bool{}
	for _, h := range hosts {
		for _, ref := range h.vms {
			listed[ref] = true
		}
	}
	var out []vmSnap
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		var s vmSnap
		simulator.Map.WithLock(vm.Self, func() {
			s = vmSnap{ref: vm.Self, name: vm.Name, power: vm.Runtime.PowerState}
			if vm.Config == nil || vm.Runtime.Host == nil {
				return
			}
			s.vmx = vm.Config.Files.VmPathName
			s.key = normVmx(s.vmx)
			s.host = *vm.Runtime.Host
			if vm.Guest != nil {
				s.guestIP = vm.Guest.IpAddress
				if len(vm.Guest.Net) > 0 {
					s.hasNet = true
					if len(vm.Guest.Net[0].IpAddress) > 0 {
						s.netIP = vm.Guest.Net[0].IpAddress[0]
					}
				}
			}
			s.ready = strings.HasSuffix(s.vmx, ".vmx") && vm.Summary.Config.VmPathName == s.vmx
		})
		if s.ready && !listed[s.ref] {
			// Still being created (vcsim lists it on its host last).
			s.ready = false
		}
		out = append(out, s)
	}
	return out
}

func (w *world) syncHosts(hosts []hostSnap) {
	present := map[types.ManagedObjectReference]bool{}
	// Hosts named by an IPv4 address keep it: reserve those first.
	for _, s := range hosts {
		present[s.ref] = true
		if ip := net.ParseIP(s.name); ip != nil && ip.To4() != nil {
			w.hostIPs[ip.To4().String()] = s.ref
		}
	}
	for ref, hm := range w.hosts {
		if !present[ref] {
			if w.hostIPs[hm.mgmtIP] == ref {
				delete(w.hostIPs, hm.mgmtIP)
			}
			delete(w.hosts, ref)
		}
	}
	for _, s := range hosts {
		hm := w.hosts[s.ref]
		if hm == nil {
			hm = &hostModel{ref: s.ref, name: s.name, alive: true, mgmtUp: true, guestsUp: true}
			if ip := net.ParseIP(s.name); ip != nil && ip.To4() != nil {
				hm.mgmtIP = ip.To4().String()
			} else {
				for {
					a := addr(3, w.nextHost)
					w.nextHost++
					if _, used := w.hostIPs[a]; !used {
						hm.mgmtIP = a
						w.hostIPs[a] = s.ref
						break
					}
				}
			}
			w.hosts[s.ref] = hm
		}
		hm.name = s.name
		if s.vnicIP != hm.mgmtIP || s.mgrIP != hm.mgmtIP {
			setHostIP(s.ref, hm.mgmtIP)
		}
	}
}

// setHostIP writes the management address into vmk0 (config.network.vnic and the management
// candidate of config.virtualNicManagerInfo).
func setHostIP(ref types.ManagedObjectReference, ip string) {
	h, ok := simulator.Map.Get(ref).(*simulator.HostSystem)
	if !ok {
		return
	}
	simulator.Map.WithLock(h, func() {
		if h.Config == nil || h.Config.Network == nil || len(h.Config.Network.Vnic) == 0 {
			return
		}
		vnics := append([]types.HostVirtualNic(nil), h.Config.Network.Vnic...)
		var ipc types.HostIpConfig
		if vnics[0].Spec.Ip != nil {
			ipc = *vnics[0].Spec.Ip
		}
		ipc.IpAddress = ip
		ipc.Dhcp = false
		ipc.SubnetMask = "255.0.0.0"
		vnics[0].Spec.Ip = &ipc
		vnics[0].Portgroup = "Management Network"
		changes := []types.PropertyChange{{Name: "config.network.vnic", Val: vnics}}
		if m := h.Config.VirtualNicManagerInfo; m != nil {
			info := *m
			info.NetConfig = append([]types.VirtualNicManagerNetConfig(nil), m.NetConfig...)
			for i := range info.NetConfig {
				nc := &info.NetConfig[i]
				nc.CandidateVnic = append([]types.HostVirtualNic(nil), nc.CandidateVnic...)
				for j := range nc.CandidateVnic {
					v := &nc.CandidateVnic[j]
					if v.Device != vnics[0].Device {
						continue
					}
					c := ipc
					v.Spec.Ip = &c
				}
			}
			changes = append(changes, types.PropertyChange{Name: "config.virtualNicManagerInfo", Val: &info})
		}
		simulator.Map.Update(h, changes)
	})
}

func (w *world) syncVMs(vms []vmSnap) {
	present := map[types.ManagedObjectReference]bool{}
	var fresh []types.ManagedObjectReference
	// New .vmx paths get the next addresses in name order (so the first inventory is numbered
	// by VM name).
	var unnumbered []*vmSnap
	for i := range vms {
		if s := &vms[i]; s.ready {
			if _, ok := w.vmIPs[s.key]; !ok {
				unnumbered = append(unnumbered, s)
			}
		}
	}
	sort.Slice(unnumbered, func(i, j int) bool { return unnumbered[i].name < unnumbered[j].name })
	for _, s := range unnumbered {
		if _, ok := w.vmIPs[s.key]; !ok {
			w.vmIPs[s.key] = addr(2, w.nextVM)
			w.nextVM++
		}
	}
	for _, s := range vms {
		present[s.ref] = true
		if !s.ready {
			continue
		}
		ip := w.vmIPs[s.key]
		seen := w.seen[s.ref]
		switch {
		case seen == nil:
			w.seen[s.ref] = &vmSeen{power: s.power}
			fresh = append(fresh, s.ref)
			setGuest(s.ref, ip, s.power, true)
		case seen.power != s.power:
			seen.power = s.power
			setGuest(s.ref, ip, s.power, true)
		case s.guestIP != ip || !s.hasNet || s.netIP != ip:
			setGuest(s.ref, ip, s.power, false)
		}
	}
	for ref := range w.seen {
		if !present[ref] {
			delete(w.seen, ref)
		}
	}
	if len(fresh) > 0 {
		addAvailableFields(fresh)
	}
}

// setGuest writes a VM's guest address and, with tools, what VMware Tools reports for its power
// state: running with a green heartbeat when on, not running with a gray one otherwise.
func setGuest(ref types.ManagedObjectReference, ip string, power types.VirtualMachinePowerState, tools bool) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Guest == nil {
			return
		}
		nets := append([]types.GuestNicInfo(nil), vm.Guest.Net...)
		if len(nets) == 0 {
			nets = append(nets, types.GuestNicInfo{Network: "VM Network", Connected: true, DeviceConfigId: 4000})
		}
		nets[0].IpAddress = []string{ip}
		nets[0].Connected = true
		changes := []types.PropertyChange{
			{Name: "guest.ipAddress", Val: ip},
			{Name: "guest.net", Val: nets},
		}
		if vm.Summary.Guest != nil {
			changes = append(changes, types.PropertyChange{Name: "summary.guest.ipAddress", Val: ip})
		}
		if tools {
			status, running, hb, state := types.VirtualMachineToolsStatusToolsNotRunning,
				string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning), types.ManagedEntityStatusGray, "notRunning"
			if power == types.VirtualMachinePowerStatePoweredOn {
				status, running, hb, state = types.VirtualMachineToolsStatusToolsOk,
					string(types.VirtualMachineToolsRunningStatusGuestToolsRunning), types.ManagedEntityStatusGreen, "running"
			}
			changes = append(changes,
				types.PropertyChange{Name: "guest.toolsStatus", Val: status},
				types.PropertyChange{Name: "guest.toolsRunningStatus", Val: running},
				types.PropertyChange{Name: "guest.guestState", Val: state},
				types.PropertyChange{Name: "guestHeartbeatStatus", Val: hb},
				types.PropertyChange{Name: "summary.quickStats.guestHeartbeatStatus", Val: hb},
			)
			if vm.Summary.Guest != nil {
				changes = append(changes,
					types.PropertyChange{Name: "summary.guest.toolsStatus", Val: status},
					types.PropertyChange{Name: "summary.guest.toolsRunningStatus", Val: running},
				)
			}
		}
		simulator.Map.Update(vm, changes)
	})
}

// addAvailableFields lists the VirtualMachine custom field definitions in new VMs'
// availableField (vcsim only adds a definition to the VMs that exist when it is made).
func addAvailableFields(refs []types.ManagedObjectReference) {
	cfm := simulator.Map.CustomFieldsManager()
	var defs []types.CustomFieldDef
	simulator.Map.WithLock(cfm, func() {
		for _, f := range cfm.Field {
			if f.ManagedObjectType == "VirtualMachine" || f.ManagedObjectType == "" {
				defs = append(defs, f)
			}
		}
	})
	if len(defs) == 0 {
		return
	}
	for _, ref := range refs {
		vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			avail := append([]types.CustomFieldDef(nil), vm.AvailableField...)
			changed := false
			for _, d := range defs {
				found := false
				for _, a := range avail {
					if a.Key == d.Key {
						found = true
					}
				}
				if !found {
					avail = append(avail, d)
					changed = true
				}
			}
			if changed {
				simulator.Map.Update(vm, []types.PropertyChange{{Name: "availableField", Val: avail}})
			}
		})
	}
}

func (w *world) syncDatastores() {
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		simulator.Map.WithLock(ds.Self, func() {
			if ds.Info != nil {
				w.dsURL[ds.Name] = ds.Info.GetDatastoreInfo().Url
			}
		})
	}
}

// instances: what runs. A VM runs when vcsim has it powered on on a live host, and a ghost runs
// while its host is alive and partitioned.
func (w *world) instances(vms []vmSnap) []instance {
	var out []instance
	seen := map[string]int{}
	add := func(i instance) {
		k := i.key + "\x00" + i.host.Value
		if at, ok := seen[k]; ok {
			out[at].ghost = out[at].ghost || i.ghost
			return
		}
		seen[k] = len(out)
		out = append(out, i)
	}
	for _, s := range vms {
		if !s.ready || s.power != types.VirtualMachinePowerStatePoweredOn {
			continue
		}
		if hm := w.hosts[s.host]; hm != nil && !hm.alive {
			continue
		}
		add(instance{key: s.key, vmx: s.vmx, name: s.name, host: s.host})
	}
	keys := make([]string, 0, len(w.ghosts))
	for k := range w.ghosts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g := w.ghosts[k]
		hm := w.hosts[g.host]
		if hm == nil || !hm.alive || !hm.partitioned {
			continue
		}
		add(instance{key: g.key, vmx: g.vmx, name: g.name, host: g.host, ghost: true})
	}
	return out
}

// lockedElsewhere returns the .vmx of vm and the hosts other than vm's that run it (whose lock
// a power-on there would meet).
func (w *world) lockedElsewhere(vm *simulator.VirtualMachine) (string, []string) {
	var vmx string
	var host types.ManagedObjectReference
	simulator.Map.WithLock(vm, func() {
		if vm.Config != nil {
			vmx = vm.Config.Files.VmPathName
		}
		if vm.Runtime.Host != nil {
			host = *vm.Runtime.Host
		}
	})
	if vmx == "" {
		return "", nil
	}
	key := normVmx(vmx)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reconcileLocked()
	var holders []string
	for _, i := range w.lastInst {
		if i.key == key && i.host != host {
			holders = append(holders, w.hostName(i.host))
		}
	}
	return vmx, holders
}

// reachable says whether vCenter could reach the host (alive and not partitioned).
func (w *world) reachable(ref types.ManagedObjectReference) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	hm := w.hosts[ref]
	return hm == nil || (hm.alive && !hm.partitioned)
}

func (w *world) hostName(ref types.ManagedObjectReference) string {
	if hm := w.hosts[ref]; hm != nil {
		return hm.name
	}
	return ref.Value
}

func (w *world) hostIP(ref types.ManagedObjectReference) string {
	if w == nil {
		return ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if hm := w.hosts[ref]; hm != nil {
		return hm.mgmtIP
	}
	return ""
}

func (w *world) vmIP(vmx string) string {
	if w == nil || vmx == "" {
		return ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.vmIPs[normVmx(vmx)]
}

// lockName is the VM's lock file name: ".lck-" and 16 hex digits, stable per .vmx.
func lockName(key string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return fmt.Sprintf(".lck-%016x", h.Sum64())
}

// lockPath is where a VM's lock lives: in its directory on the datastore's local directory.
func (w *world) lockPath(key string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(key) {
		return "", fmt.Errorf("not a datastore path: %s", key)
	}
	url, ok := w.dsURL[p.Datastore]
	if !ok || url == "" {
		return "", fmt.Errorf("no datastore %q", p.Datastore)
	}
	return path.Join(url, path.Dir(p.Path), lockName(key)), nil
}
