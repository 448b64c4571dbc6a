package main

// Control endpoints of the liveness model: partitions, crashes, fences, heals and power cycles of
// hosts, guest networks of VMs, and the truth as JSON.

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// loseHost makes vCenter lose a connected host (notResponding, HostConnectionLostEvent); a host
// already notResponding or disconnected stays as it is.
func loseHost(h *simulator.HostSystem) {
	if connectionState(h) == types.HostSystemConnectionStateConnected {
		hostState(h, types.HostSystemConnectionStateNotResponding,
			types.VirtualMachineConnectionStateDisconnected, &types.HostConnectionLostEvent{})
	}
}

// regainHost makes vCenter see the host again (connected, HostConnectedEvent).
func regainHost(h *simulator.HostSystem) {
	if connectionState(h) != types.HostSystemConnectionStateConnected {
		hostState(h, types.HostSystemConnectionStateConnected,
			types.VirtualMachineConnectionStateConnected, &types.HostConnectedEvent{})
	}
}

func connectionState(h *simulator.HostSystem) types.HostSystemConnectionState {
	var s types.HostSystemConnectionState
	simulator.Map.WithLock(h, func() { s = h.Runtime.ConnectionState })
	return s
}

// model returns the host's model entry (w.mu held), creating it if the loop has not seen it yet.
func (w *world) model(h *simulator.HostSystem) *hostModel {
	hm := w.hosts[h.Self]
	if hm == nil {
		w.reconcileLocked()
		hm = w.hosts[h.Self]
	}
	return hm
}

func (c *controller) hostPartition(r *http.Request) (interface{}, error) {
	h, err := findHost(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	mgmt, err := upDown(r, "mgmt", false)
	if err != nil {
		return nil, err
	}
	guests, err := upDown(r, "guests", true)
	if err != nil {
		return nil, err
	}
	w := theWorld
	w.mu.Lock()
	hm := w.model(h)
	hm.partitioned, hm.mgmtUp, hm.guestsUp = true, mgmt, guests
	var ghosts []string
	if hm.alive {
		for _, s := range snapshotVMs(snapshotHosts()) {
			if s.ready && s.host == h.Self && s.power == types.VirtualMachinePowerStatePoweredOn {
				if old := w.ghosts[s.key]; old == nil || old.host != h.Self {
					w.ghosts[s.key] = &ghost{key: s.key, vmx: s.vmx, name: s.name, host: h.Self, since: time.Now()}
				}
				ghosts = append(ghosts, s.key)
			}
		}
	}
	w.mu.Unlock()
	loseHost(h)
	w.reconcile()
	sort.Strings(ghosts)
	return map[string]interface{}{"host": h.Self.Value, "partitioned": true, "mgmt": upDownName(mgmt),
		"guests": upDownName(guests), "ghosts": nonNil(ghosts)}, nil
}

// hostDown: the hypervisor stops (a crash or a power-off); vCenter loses the host and keeps
// listing its VMs as they were.
func hostDown(r *http.Request) (*simulator.HostSystem, []string, error) {
	return hostDownNamed(r.FormValue("name"))
}

// hostDownNamed is hostDown of the host with that name (or moref).
func hostDownNamed(name string) (*simulator.HostSystem, []string, error) {
	h, err := findHost(name)
	if err != nil {
		return nil, nil, err
	}
	w := theWorld
	w.mu.Lock()
	hm := w.model(h)
	w.reconcileLocked()
	hm.alive, hm.partitioned, hm.down = false, false, true
	var died []string
	for _, i := range w.lastInst {
		if i.host == h.Self {
			died = append(died, i.key)
		}
	}
	for k, g := range w.ghosts {
		if g.host == h.Self {
			delete(w.ghosts, k)
		}
	}
	w.mu.Unlock()
	loseHost(h)
	w.reconcile()
	sort.Strings(died)
	return h, nonNil(died), nil
}

func (c *controller) hostCrash(r *http.Request) (interface{}, error) {
	h, died, err := hostDown(r)
	if err != nil {
		return nil, err
	}
	return map[string]interface{}{"host": h.Self.Value, "crashed": true, "stopped": died}, nil
}

func (c *controller) hostPowerOff(r *http.Request) (interface{}, error) {
	h, died, err := hostDown(r)
	if err != nil {
		return nil, err
	}
	return map[string]interface{}{"host": h.Self.Value, "off": true, "stopped": died}, nil
}

type ghostOutcome struct {
	Vmx     string `json:"vmx"`
	Outcome string `json:"outcome"` // registered, resumed, running, conflict, failed
	VM      string `json:"vm,omitempty"`
	Host    string `json:"host,omitempty"` // for a conflict: where vCenter has it
	Error   string `json:"error,omitempty"`
}

func (c *controller) hostHeal(r *http.Request) (interface{}, error) {
	return heal(r, false)
}

func (c *controller) hostRevive(r *http.Request) (interface{}, error) {
	return heal(r, true)
}

// heal: the host answers again. After a crash or power-off (or always, with cycle: a power cycle)
// its VMs that vCenter lists on it are powered off; after a partition its ghosts come back to
// vCenter: registered again on it and powered on if vCenter lost them, powered on if vCenter has
// them there powered off, left alone (a conflict) if vCenter has them on another host.
func heal(r *http.Request, cycle bool) (interface{}, error) {
	return healNamed(r.FormValue("name"), cycle)
}

// healNamed is heal of the host with that name (or moref).
func healNamed(name string, cycle bool) (map[string]interface{}, error) {
	h, err := findHost(name)
	if err != nil {
		return nil, err
	}
	w := theWorld
	w.mu.Lock()
	defer w.mu.Unlock()
	hm := w.model(h)
	rebooted := cycle || hm.down || !hm.alive
	var ghosts []*ghost
	for k, g := range w.ghosts {
		if g.host == h.Self {
			ghosts = append(ghosts, g)
			delete(w.ghosts, k)
		}
	}
	sort.Slice(ghosts, func(i, j int) bool { return ghosts[i].key < ghosts[j].key })
	hm.alive, hm.partitioned, hm.mgmtUp, hm.guestsUp, hm.down = true, false, true, true, false
	regainHost(h)
	out := map[string]interface{}{"host": h.Self.Value, "healed": true, "rebooted": rebooted}
	if rebooted {
		var off []string
		for _, s := range snapshotVMs(snapshotHosts()) {
			if s.host == h.Self && s.power == types.VirtualMachinePowerStatePoweredOn {
				setPower(s.ref, types.VirtualMachinePowerStatePoweredOff)
				off = append(off, s.ref.Value)
			}
		}
		out["powered_off"] = nonNil(off)
	} else {
		var outcomes []ghostOutcome
		vms := snapshotVMs(snapshotHosts())
		for _, g := range ghosts {
			outcomes = append(outcomes, w.returnGhost(h, g, vms))
		}
		if outcomes == nil {
			outcomes = []ghostOutcome{}
		}
		out["ghosts"] = outcomes
	}
	w.reconcileLocked()
	return out, nil
}

func (w *world) returnGhost(h *simulator.HostSystem, g *ghost, vms []vmSnap) ghostOutcome {
	o := ghostOutcome{Vmx: g.vmx}
	var here *vmSnap
	for i := range vms {
		s := &vms[i]
		if s.key != g.key || s.vmx == "" {
			continue
		}
		if s.host != h.Self {
			o.Outcome, o.VM, o.Host = "conflict", s.ref.Value, w.hostName(s.host)
			return o
		}
		here = s
	}
	if here != nil {
		o.VM = here.ref.Value
		if here.power == types.VirtualMachinePowerStatePoweredOn {
			o.Outcome = "running"
		} else {
			setPower(here.ref, types.VirtualMachinePowerStatePoweredOn)
			o.Outcome = "resumed"
		}
		return o
	}
	ref, err := registerOn(h, g.vmx, g.name)
	if err != nil {
		o.Outcome, o.Error = "failed", err.Error()
		return o
	}
	setPower(ref, types.VirtualMachinePowerStatePoweredOn)
	o.Outcome, o.VM = "registered", ref.Value
	return o
}

// setPower changes a VM's power state in vcsim directly, without a user's task or event (as
// vCenter learns it from a host that rebooted or reconnects).
func setPower(ref types.ManagedObjectReference, state types.VirtualMachinePowerState) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Runtime.PowerState == state {
			return
		}
		var boot interface{}
		if state == types.VirtualMachinePowerStatePoweredOn {
			boot = time.Now()
		}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "runtime.powerState", Val: state},
			{Name: "summary.runtime.powerState", Val: state},
			{Name: "summary.runtime.bootTime", Val: boot},
		})
	})
}

// registerOn registers vmx on host h: into its datacenter's VM folder, its cluster's (or compute
// resource's) root resource pool.
func registerOn(h *simulator.HostSystem, vmx, name string) (types.ManagedObjectReference, error) {
	var none types.ManagedObjectReference
	var parent *types.ManagedObjectReference
	simulator.Map.WithLock(h, func() { parent = h.Parent })
	if parent == nil {
		return none, fmt.Errorf("host %s has no parent", h.Name)
	}
	var pool *types.ManagedObjectReference
	var up *types.ManagedObjectReference
	switch p := simulator.Map.Get(*parent).(type) {
	case *simulator.ClusterComputeResource:
		simulator.Map.WithLock(p, func() { pool, up = p.ResourcePool, p.Parent })
	case *mo.ComputeResource:
		simulator.Map.WithLock(p, func() { pool, up = p.ResourcePool, p.Parent })
	}
	if pool == nil {
		return none, fmt.Errorf("no resource pool for host %s", h.Name)
	}
	var dc *simulator.Datacenter
	for up != nil {
		e := simulator.Map.Get(*up)
		if d, ok := e.(*simulator.Datacenter); ok {
			dc = d
			break
		}
		me, ok := e.(mo.Entity)
		if !ok {
			break
		}
		up = me.Entity().Parent
	}
	if dc == nil {
		return none, fmt.Errorf("no datacenter for host %s", h.Name)
	}
	folder, ok := simulator.Map.Get(dc.VmFolder).(*simulator.Folder)
	if !ok {
		return none, fmt.Errorf("no VM folder in %s", dc.Name)
	}
	ctx := systemContext()
	ctx.Caller = &folder.Self
	host := h.Self
	var res interface{}
	simulator.Map.WithLock(folder, func() {
		res = folder.RegisterVMTask(ctx, &types.RegisterVM_Task{This: folder.Self, Path: vmx, Name: name, Pool: pool, Host: &host})
	})
	body, ok := res.(*methods.RegisterVM_TaskBody)
	if !ok || body.Res == nil {
		return none, fmt.Errorf("RegisterVM_Task of %s failed", vmx)
	}
	task, ok := simulator.Map.Get(body.Res.Returnval).(*simulator.Task)
	if !ok {
		return none, fmt.Errorf("RegisterVM_Task of %s: no task", vmx)
	}
	var info types.TaskInfo
	simulator.Map.WithLock(task, func() { info = task.Info })
	if info.Error != nil {
		return none, fmt.Errorf("RegisterVM_Task of %s: %T", vmx, info.Error.Fault)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok {
		return none, fmt.Errorf("RegisterVM_Task of %s: no VM", vmx)
	}
	return ref, nil
}

func (c *controller) vmGuestNet(r *http.Request) (interface{}, error) {
	up, err := upDown(r, "state", true)
	if err != nil || r.FormValue("state") == "" {
		return nil, fmt.Errorf("state must be up or down")
	}
	name := r.FormValue("name")
	w := theWorld
	var key string
	if vm, err := findVM(name); err == nil {
		simulator.Map.WithLock(vm, func() {
			if vm.Config != nil {
				key = normVmx(vm.Config.Files.VmPathName)
			}
		})
	} else if strings.HasPrefix(name, "[") {
		key = normVmx(name)
	} else {
		w.mu.Lock()
		for k, g := range w.ghosts {
			if g.name == name {
				key = k
			}
		}
		w.mu.Unlock()
	}
	if key == "" {
		return nil, fmt.Errorf("no VM %q", name)
	}
	w.mu.Lock()
	if up {
		delete(w.guestDown, key)
	} else {
		w.guestDown[key] = true
	}
	w.reconcileLocked()
	w.mu.Unlock()
	return map[string]interface{}{"vmx": key, "guest_net": upDownName(up)}, nil
}

type truthRun struct {
	Host  string `json:"host"`
	Ref   string `json:"ref"`
	Ghost bool   `json:"ghost"`
}

type truthReg struct {
	VM       string `json:"vm"`
	Name     string `json:"name"`
	Host     string `json:"host"`
	HostName string `json:"host_name"`
	Power    string `json:"power"`
}

type truthVM struct {
	RunningOn     []truthRun `json:"running_on"`
	Registered    bool       `json:"registered"`
	Registrations []truthReg `json:"registrations"`
	GuestIP       string     `json:"guest_ip"`
	GuestNet      string     `json:"guest_net"`
	Listening     bool       `json:"listening"`
	Lock          string     `json:"lock,omitempty"`
	LockError     string     `json:"lock_error,omitempty"`
	Conflict      bool       `json:"conflict"` // runs on more than one host
}

type truthHost struct {
	Ref         string   `json:"ref"`
	Alive       bool     `json:"alive"`
	Partitioned bool     `json:"partitioned"`
	Mgmt        string   `json:"mgmt"`
	Guests      string   `json:"guests"`
	Connection  string   `json:"connection"`
	MgmtIP      string   `json:"mgmt_ip"`
	Listening   bool     `json:"listening"`
	Ghosts      []string `json:"ghosts"`
}

type truthOut struct {
	VMs          map[string]*truthVM   `json:"vms"`
	Hosts        map[string]*truthHost `json:"hosts"`
	ListenErrors map[string]string     `json:"listen_errors,omitempty"`
}

func (c *controller) truth(w http.ResponseWriter, r *http.Request) {
	wd := theWorld
	wd.mu.Lock()
	defer wd.mu.Unlock()
	wd.reconcileLocked()
	out := truthOut{VMs: map[string]*truthVM{}, Hosts: map[string]*truthHost{}}
	vmOf := func(key string) *truthVM {
		t := out.VMs[key]
		if t == nil {
			t = &truthVM{RunningOn: []truthRun{}, Registrations: []truthReg{}, GuestIP: wd.vmIPs[key], GuestNet: "up"}
			if wd.guestDown[key] {
				t.GuestNet = "down"
			}
			if l := wd.locks[key]; l != nil {
				t.Lock = l.path
			}
			t.LockError = wd.lockErr[key]
			if wd.guestPort > 0 && t.GuestIP != "" {
				_, t.Listening = wd.listeners[fmt.Sprintf("%s:%d", t.GuestIP, wd.guestPort)]
			}
			out.VMs[key] = t
		}
		return t
	}
	for _, s := range wd.lastVMs {
		if !s.ready {
			continue
		}
		t := vmOf(s.key)
		t.Registered = true
		t.Registrations = append(t.Registrations, truthReg{VM: s.ref.Value, Name: s.name, Host: s.host.Value,
			HostName: wd.hostName(s.host), Power: string(s.power)})
	}
	for _, i := range wd.lastInst {
		t := vmOf(i.key)
		t.RunningOn = append(t.RunningOn, truthRun{Host: wd.hostName(i.host), Ref: i.host.Value, Ghost: i.ghost})
		t.Conflict = len(t.RunningOn) > 1
	}
	for _, g := range wd.ghosts {
		vmOf(g.key)
	}
	for _, s := range wd.lastHosts {
		hm := wd.hosts[s.ref]
		if hm == nil {
			continue
		}
		th := &truthHost{Ref: s.ref.Value, Alive: hm.alive, Partitioned: hm.partitioned,
			Mgmt: upDownName(hm.mgmtUp), Guests: upDownName(hm.guestsUp), Connection: string(s.conn),
			MgmtIP: hm.mgmtIP, Ghosts: []string{}}
		if wd.mgmtPort > 0 {
			_, th.Listening = wd.listeners[fmt.Sprintf("%s:%d", hm.mgmtIP, wd.mgmtPort)]
		}
		for k, g := range wd.ghosts {
			if g.host == s.ref {
				th.Ghosts = append(th.Ghosts, k)
			}
		}
		sort.Strings(th.Ghosts)
		out.Hosts[s.name] = th
	}
	if len(wd.listenErr) > 0 {
		out.ListenErrors = map[string]string{}
		for a, e := range wd.listenErr {
			out.ListenErrors[a] = e
		}
	}
	reply(w, out, nil)
}

func upDownName(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
