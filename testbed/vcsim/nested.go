package main

// Nested ESXi: with -nested-of CONTROL_URL -nested-hosts H1,H2,... this test bed is the admin
// vCenter whose VMs are another test bed's hosts. At start it creates one powered-on VM per name
// (named exactly like the host) and takes a snapshot "clean" of each (with memory). It watches
// the SOAP calls on those VMs: after a successful PowerOffVM_Task it POSTs /host/poweroff?name=H to
// the managed test bed's control endpoint; after a successful PowerOnVM_Task, ResetVM_Task,
// RevertToCurrentSnapshot_Task or RevertToSnapshot_Task that leaves the VM powered on it POSTs
// /host/revive?name=H. The SOAP answer reaches the client only after that POST was answered, so a
// client that saw the task succeed sees the managed host down (or back).
//
// vcsim's reverts leave the power state alone; for these VMs the test bed gives them vSphere's:
// after a revert the VM is powered on if the snapshot was taken powered on with memory (and
// suppressPowerOn is not true), powered off otherwise (suspended if the snapshot was).

import (
	"bytes"
	"context"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// theNested is the admin side (nil unless -nested-of).
var theNested *nested

type nestedSent struct {
	Method string `json:"method"` // the SOAP method that succeeded
	VM     string `json:"vm"`
	Host   string `json:"host"`
	Path   string `json:"path"`
	Status int    `json:"status"`
	Answer string `json:"answer,omitempty"`
	Error  string `json:"error,omitempty"`
	At     string `json:"at"`
}

type nested struct {
	of     string // the managed test bed's control endpoint
	client *http.Client

	mu     sync.Mutex
	vms    map[types.ManagedObjectReference]string // nested VM -> managed host name
	clean  map[types.ManagedObjectReference]types.ManagedObjectReference
	memory map[types.ManagedObjectReference]bool // snapshot -> taken with memory
	sent   []nestedSent
}

var taskRe = regexp.MustCompile(`<returnval[^>]*>(task-[^<]+)</returnval>`)

// nestedWatched are the SOAP methods whose outcome the admin side looks at.
func nestedWatched(method string) bool {
	switch method {
	case "PowerOffVM_Task", "PowerOnVM_Task", "ResetVM_Task", "RevertToCurrentSnapshot_Task",
		"RevertToSnapshot_Task", "CreateSnapshot_Task":
		return true
	}
	return false
}

func parseNames(list string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if seen[n] {
			return nil, fmt.Errorf("host %q named twice", n)
		}
		seen[n] = true
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no host names")
	}
	return names, nil
}

// startNested checks that the managed test bed answers, then creates the nested VMs through the
// SDK (as user am-vcsim), powers them on and takes their "clean" snapshots.
func startNested(sdk url.URL, of string, names []string) (*nested, error) {
	n := &nested{
		of:     strings.TrimSuffix(of, "/"),
		client: &http.Client{Timeout: 60 * time.Second},
		vms:    map[types.ManagedObjectReference]string{},
		clean:  map[types.ManagedObjectReference]types.ManagedObjectReference{},
		memory: map[types.ManagedObjectReference]bool{},
	}
	res, err := n.client.Get(n.of + "/health")
	if err != nil {
		return nil, fmt.Errorf("the managed test bed at %s: %v", n.of, err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the managed test bed at %s: /health %s", n.of, res.Status)
	}

	type place struct {
		host   types.ManagedObjectReference
		pool   types.ManagedObjectReference
		folder types.ManagedObjectReference
		ds     string
	}
	var places []place
	for _, s := range snapshotHosts() {
		h, ok := simulator.Map.Get(s.ref).(*simulator.HostSystem)
		if !ok {
			continue
		}
		var p place
		simulator.Map.WithLock(h.Self, func() {
			p.host = h.Self
			if h.Parent != nil {
				switch cr := simulator.Map.Get(*h.Parent).(type) {
				case *simulator.ClusterComputeResource:
					if cr.ResourcePool != nil {
						p.pool = *cr.ResourcePool
					}
				case *mo.ComputeResource:
					if cr.ResourcePool != nil {
						p.pool = *cr.ResourcePool
					}
				}
			}
			if len(h.Datastore) > 0 {
				if ds, ok := simulator.Map.Get(h.Datastore[0]).(*simulator.Datastore); ok {
					p.ds = ds.Name
				}
			}
		})
		if dc := datacenterOf(h.Parent); dc != nil {
			p.folder = dc.VmFolder
		}
		if p.pool.Value != "" && p.folder.Value != "" && p.ds != "" {
			places = append(places, p)
		}
	}
	if len(places) == 0 {
		return nil, fmt.Errorf("no host with a resource pool and a datastore for the nested VMs")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	u := sdk
	u.User = url.UserPassword("am-vcsim", "nested")
	c, err := govmomi.NewClient(ctx, &u, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Logout(ctx) }()
	for i, name := range names {
		p := places[i%len(places)]
		spec := types.VirtualMachineConfigSpec{
			Name:     name,
			GuestId:  "vmkernel65Guest",
			NumCPUs:  4,
			MemoryMB: 16384,
			Files:    &types.VirtualMachineFileInfo{VmPathName: "[" + p.ds + "]"},
		}
		folder := object.NewFolder(c.Client, p.folder)
		task, err := folder.CreateVM(ctx, spec, object.NewResourcePool(c.Client, p.pool), object.NewHostSystem(c.Client, p.host))
		if err != nil {
			return nil, fmt.Errorf("creating VM %s: %v", name, err)
		}
		info, err := task.WaitForResult(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating VM %s: %v", name, err)
		}
		ref, ok := info.Result.(types.ManagedObjectReference)
		if !ok {
			return nil, fmt.Errorf("creating VM %s: no VM in the task's result", name)
		}
		vm := object.NewVirtualMachine(c.Client, ref)
		if task, err = vm.PowerOn(ctx); err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("powering on VM %s: %v", name, err)
		}
		if task, err = vm.CreateSnapshot(ctx, "clean", "taken by am-vcsim at start", true, false); err == nil {
			info, err = task.WaitForResult(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot of VM %s: %v", name, err)
		}
		snap, ok := info.Result.(types.ManagedObjectReference)
		if !ok {
			return nil, fmt.Errorf("snapshot of VM %s: no snapshot in the task's result", name)
		}
		n.vms[ref] = name
		n.clean[ref] = snap
		n.memory[snap] = true
	}
	return n, nil
}

// datacenterOf is the datacenter above ref.
func datacenterOf(up *types.ManagedObjectReference) *simulator.Datacenter {
	for up != nil {
		e := simulator.Map.Get(*up)
		if d, ok := e.(*simulator.Datacenter); ok {
			return d
		}
		me, ok := e.(mo.Entity)
		if !ok {
			return nil
		}
		up = me.Entity().Parent
	}
	return nil
}

// serve runs serve with the answer kept back, looks at the outcome of a watched call, tells the
// managed test bed, then sends the answer.
func (n *nested) serve(w http.ResponseWriter, method, object string, body []byte, serve func(http.ResponseWriter)) {
	rec := httptest.NewRecorder()
	serve(rec)
	n.after(method, object, body, rec.Body.Bytes())
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// after: what a served call did. vcsim 0.24.2 runs these tasks before it answers, so the task's
// state is final here.
func (n *nested) after(method, object string, body, answer []byte) {
	m := taskRe.FindSubmatch(answer)
	if m == nil {
		return
	}
	task, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(m[1])}).(*simulator.Task)
	if !ok {
		return
	}
	var info types.TaskInfo
	simulator.Map.WithLock(task, func() { info = task.Info })
	if info.State != types.TaskInfoStateSuccess {
		return
	}
	vmRef := types.ManagedObjectReference{Type: "VirtualMachine", Value: object}
	var snap *types.ManagedObjectReference
	switch method {
	case "CreateSnapshot_Task":
		if ref, ok := info.Result.(types.ManagedObjectReference); ok {
			n.mu.Lock()
			n.memory[ref] = soapArgs(body)["memory"] == "true"
			n.mu.Unlock()
		}
		return
	case "RevertToSnapshot_Task":
		s, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: object}).(*simulator.VirtualMachineSnapshot)
		if !ok {
			return
		}
		simulator.Map.WithLock(s, func() { vmRef = s.Vm })
		ref := s.Self
		snap = &ref
	}
	n.mu.Lock()
	host, ok := n.vms[vmRef]
	n.mu.Unlock()
	if !ok {
		return
	}
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	if method == "RevertToCurrentSnapshot_Task" || method == "RevertToSnapshot_Task" {
		n.revertPower(vm, snap, soapArgs(body)["suppressPowerOn"] == "true")
	}
	var power types.VirtualMachinePowerState
	simulator.Map.WithLock(vm, func() { power = vm.Runtime.PowerState })
	var path string
	switch {
	case method == "PowerOffVM_Task":
		path = "/host/poweroff?name=" + url.QueryEscape(host)
	case power == types.VirtualMachinePowerStatePoweredOn:
		path = "/host/revive?name=" + url.QueryEscape(host)
	default:
		return
	}
	n.post(method, vmRef.Value, host, path)
}

// revertPower gives a reverted VM the power state vSphere would: on if the snapshot was taken on
// with memory (unless suppressPowerOn), suspended if it was taken suspended, off otherwise.
func (n *nested) revertPower(vm *simulator.VirtualMachine, snap *types.ManagedObjectReference, suppress bool) {
	var state types.VirtualMachinePowerState
	found := false
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot == nil {
			return
		}
		if snap == nil {
			snap = vm.Snapshot.CurrentSnapshot
		}
		if snap == nil {
			return
		}
		var walk func([]types.VirtualMachineSnapshotTree)
		walk = func(list []types.VirtualMachineSnapshotTree) {
			for _, t := range list {
				if t.Snapshot == *snap {
					state, found = t.State, true
					return
				}
				walk(t.ChildSnapshotList)
			}
		}
		walk(vm.Snapshot.RootSnapshotList)
	})
	if !found {
		return
	}
	n.mu.Lock()
	memory := n.memory[*snap]
	n.mu.Unlock()
	want := types.VirtualMachinePowerStatePoweredOff
	switch {
	case state == types.VirtualMachinePowerStatePoweredOn && memory && !suppress:
		want = types.VirtualMachinePowerStatePoweredOn
	case state == types.VirtualMachinePowerStateSuspended:
		want = types.VirtualMachinePowerStateSuspended
	}
	setPower(vm.Self, want)
}

func (n *nested) post(method, vm, host, path string) {
	s := nestedSent{Method: method, VM: vm, Host: host, Path: path, At: time.Now().UTC().Format(time.RFC3339Nano)}
	res, err := n.client.Post(n.of+path, "application/x-www-form-urlencoded", nil)
	if err != nil {
		s.Error = err.Error()
	} else {
		b, _ := ioutil.ReadAll(res.Body)
		_ = res.Body.Close()
		s.Status, s.Answer = res.StatusCode, string(bytes.TrimSpace(b))
		if res.StatusCode/100 != 2 {
			s.Error = res.Status
		}
	}
	if s.Error != "" {
		fmt.Fprintf(os.Stderr, "am-vcsim: nested %s of %s: POST %s%s: %s\n", method, host, n.of, path, s.Error)
	}
	n.mu.Lock()
	n.sent = append(n.sent, s)
	n.mu.Unlock()
}

// hostOf is the managed host a VM stands for ("" if none).
func (n *nested) hostOf(ref types.ManagedObjectReference) string {
	if n == nil {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.vms[ref]
}

type nestedVM struct {
	Name  string `json:"name"`
	Ref   string `json:"ref"`
	Host  string `json:"host"` // the admin bed's host it runs on
	Power string `json:"power"`
	Clean string `json:"clean"` // the "clean" snapshot's moref
}

// GET /nested: the managed test bed, the nested VMs and what was sent to it.
func (c *controller) nestedInfo(w http.ResponseWriter, r *http.Request) {
	n := theNested
	if n == nil {
		reply(w, nil, fmt.Errorf("not an admin test bed (no -nested-of)"))
		return
	}
	n.mu.Lock()
	refs := make([]types.ManagedObjectReference, 0, len(n.vms))
	for ref := range n.vms {
		refs = append(refs, ref)
	}
	clean := map[types.ManagedObjectReference]string{}
	for vm, s := range n.clean {
		clean[vm] = s.Value
	}
	sent := append([]nestedSent{}, n.sent...)
	n.mu.Unlock()
	var vms []nestedVM
	for _, ref := range refs {
		vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		v := nestedVM{Ref: ref.Value, Clean: clean[ref]}
		var host types.ManagedObjectReference
		simulator.Map.WithLock(vm, func() {
			v.Name, v.Power = vm.Name, string(vm.Runtime.PowerState)
			if vm.Runtime.Host != nil {
				host = *vm.Runtime.Host
			}
		})
		if h, ok := simulator.Map.Get(host).(*simulator.HostSystem); ok {
			v.Host = h.Name
		}
		vms = append(vms, v)
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
	reply(w, map[string]interface{}{"of": n.of, "vms": vms, "sent": sent}, nil)
}

// sdkVM runs f on the named VM through the SDK as user (so the call passes the SOAP handler and
// its watchers, as a client's would) and waits for the task.
func (c *controller) sdkVM(r *http.Request, f func(ctx context.Context, vm *object.VirtualMachine) (*object.Task, error)) (interface{}, error) {
	v, err := findVM(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	user := r.FormValue("user")
	if user == "" {
		user = "am-vcsim-control"
	}
	u := c.sdk
	u.User = url.UserPassword(user, "control")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := govmomi.NewClient(ctx, &u, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = client.Logout(ctx) }()
	task, err := f(ctx, object.NewVirtualMachine(client.Client, v.Self))
	if err != nil {
		return nil, err
	}
	if err := task.Wait(ctx); err != nil {
		return nil, err
	}
	out := map[string]interface{}{"vm": v.Self.Value, "user": user}
	simulator.Map.WithLock(v, func() { out["power"] = string(v.Runtime.PowerState) })
	return out, nil
}

func (c *controller) vmPowerOn(r *http.Request) (interface{}, error) {
	return c.sdkVM(r, func(ctx context.Context, vm *object.VirtualMachine) (*object.Task, error) {
		return vm.PowerOn(ctx)
	})
}

func (c *controller) vmReset(r *http.Request) (interface{}, error) {
	return c.sdkVM(r, func(ctx context.Context, vm *object.VirtualMachine) (*object.Task, error) {
		return vm.Reset(ctx)
	})
}

// vmRevert: RevertToSnapshot_Task of the snapshot named snapshot, or RevertToCurrentSnapshot_Task
// without one.
func (c *controller) vmRevert(r *http.Request) (interface{}, error) {
	name := r.FormValue("snapshot")
	suppress := r.FormValue("suppress_power_on") == "true"
	return c.sdkVM(r, func(ctx context.Context, vm *object.VirtualMachine) (*object.Task, error) {
		if name == "" {
			return vm.RevertToCurrentSnapshot(ctx, suppress)
		}
		return vm.RevertToSnapshot(ctx, name, suppress)
	})
}
