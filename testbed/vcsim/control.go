package main

// The control endpoint: what a test asks the test bed to do, as vCenter would show it.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// controller serves the control endpoint.
type controller struct {
	sdk url.URL
	inj *injector
}

func (c *controller) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { reply(w, map[string]string{"status": "ok"}, nil) })
	m.HandleFunc("/inventory", c.inventory)
	m.HandleFunc("/host/not-responding", c.post(c.hostNotResponding))
	m.HandleFunc("/host/connected", c.post(c.hostConnected))
	m.HandleFunc("/vm/heartbeat", c.post(c.vmHeartbeat))
	m.HandleFunc("/host/health", c.post(c.hostHealth))
	m.HandleFunc("/vm/tools", c.post(c.vmTools))
	m.HandleFunc("/vm/power-off", c.post(c.vmPowerOff))
	m.HandleFunc("/fault", c.post(c.addRule))
	m.HandleFunc("/delay", c.post(c.addRule))
	m.HandleFunc("/reset", c.post(func(r *http.Request) (interface{}, error) {
		c.inj.mu.Lock()
		c.inj.rules = nil
		c.inj.mu.Unlock()
		c.inj.holds.release("", "")
		return map[string]string{"status": "ok"}, nil
	}))
	m.HandleFunc("/hold", c.post(c.hold))
	m.HandleFunc("/held", c.held)
	// Go's profiler, for a benchmark that asks where the test bed's time goes.
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/calls", func(w http.ResponseWriter, r *http.Request) { reply(w, c.inj.counts(), nil) })
	m.HandleFunc("/release", c.post(c.release))
	m.HandleFunc("/vm/attribute", c.post(c.vmAttribute))
	m.HandleFunc("/host/partition", c.post(c.hostPartition))
	m.HandleFunc("/host/crash", c.post(c.hostCrash))
	m.HandleFunc("/host/poweroff", c.post(c.hostPowerOff))
	m.HandleFunc("/host/heal", c.post(c.hostHeal))
	m.HandleFunc("/host/revive", c.post(c.hostRevive))
	m.HandleFunc("/vm/guest-net", c.post(c.vmGuestNet))
	m.HandleFunc("/truth", c.truth)
	m.HandleFunc("/bmc/notify", c.bmcNotify)
	m.HandleFunc("/nested", c.nestedInfo)
	m.HandleFunc("/vm/power-on", c.post(c.vmPowerOn))
	m.HandleFunc("/vm/reset", c.post(c.vmReset))
	m.HandleFunc("/vm/revert", c.post(c.vmRevert))
	return m
}

func (c *controller) post(f func(r *http.Request) (interface{}, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		v, err := f(r)
		reply(w, v, err)
	}
}

func reply(w http.ResponseWriter, v interface{}, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		v = map[string]string{"error": err.Error()}
	}
	_ = json.NewEncoder(w).Encode(v)
}

type vmInfo struct {
	Name    string `json:"name"`
	Ref     string `json:"ref"`
	GuestIP string `json:"guest_ip"`
	Vmx     string `json:"vmx"`
	Power   string `json:"power"`
	// Datastores: the datastores vCenter shows the VM's files on (its datastore property, what
	// RelocateVM_Task changes), by id.
	Datastores []string `json:"datastores"`
	// NestedHost: in an admin test bed (-nested-of), the managed test bed's host this VM is.
	NestedHost string `json:"nested_host,omitempty"`
}

type hostInfo struct {
	Name    string   `json:"name"`
	Ref     string   `json:"ref"`
	Cluster string   `json:"cluster"`
	MgmtIP  string   `json:"mgmt_ip"`
	VMs     []vmInfo `json:"vms"`
}

func (c *controller) inventory(w http.ResponseWriter, r *http.Request) {
	var out []hostInfo
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		var hi hostInfo
		var refs []types.ManagedObjectReference
		simulator.Map.WithLock(h, func() {
			hi = hostInfo{Name: h.Name, Ref: h.Self.Value}
			if h.Parent != nil {
				if p, ok := simulator.Map.Get(*h.Parent).(mo.Entity); ok {
					hi.Cluster = p.Entity().Name
				}
			}
		})
		refs = vmsOn(h.Self)
		hi.MgmtIP = theWorld.hostIP(h.Self)
		for _, ref := range refs {
			if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
				vi := vmInfo{Ref: ref.Value}
				simulator.Map.WithLock(vm, func() {
					vi.Name = vm.Name
					vi.Power = string(vm.Runtime.PowerState)
					if vm.Config != nil {
						vi.Vmx = vm.Config.Files.VmPathName
					}
					for _, ds := range vm.Datastore {
						vi.Datastores = append(vi.Datastores, ds.Value)
					}
				})
				vi.GuestIP = theWorld.vmIP(vi.Vmx)
				vi.NestedHost = theNested.hostOf(ref)
				hi.VMs = append(hi.VMs, vi)
			}
		}
		out = append(out, hi)
	}
	reply(w, out, nil)
}

// vmsOn lists the VMs whose runtime.host is h. vcsim's own HostSystem.vm list goes stale after a
// migration or a clone placed on another host (RelocateVM_Task removes the VM from the target's
// list instead of moving it there), so the test bed never reads it.
func vmsOn(h types.ManagedObjectReference) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm.Self, func() {
			if vm.Runtime.Host != nil && *vm.Runtime.Host == h {
				out = append(out, vm.Self)
			}
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value < out[j].Value })
	return out
}

// vmsByHost is vmsOn for every host at once, by one walk of the VMs.
func vmsByHost() map[types.ManagedObjectReference][]types.ManagedObjectReference {
	out := map[types.ManagedObjectReference][]types.ManagedObjectReference{}
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm.Self, func() {
			if vm.Runtime.Host != nil {
				out[*vm.Runtime.Host] = append(out[*vm.Runtime.Host], vm.Self)
			}
		})
	}
	for _, refs := range out {
		sort.Slice(refs, func(i, j int) bool { return refs[i].Value < refs[j].Value })
	}
	return out
}

func findHost(name string) (*simulator.HostSystem, error) {
	for _, e := range simulator.Map.All("HostSystem") {
		if h := e.(*simulator.HostSystem); h.Name == name || h.Self.Value == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("no host %q", name)
}

func findVM(name string) (*simulator.VirtualMachine, error) {
	for _, e := range simulator.Map.All("VirtualMachine") {
		if vm := e.(*simulator.VirtualMachine); vm.Name == name || vm.Self.Value == name {
			return vm, nil
		}
	}
	return nil, fmt.Errorf("no VM %q", name)
}

// setHostConnection marks a host and its VMs the way vCenter does when it loses (or regains) a host,
// and posts the matching event.
func setHostConnection(r *http.Request, state types.HostSystemConnectionState, vmState types.VirtualMachineConnectionState, event types.BaseEvent) (interface{}, error) {
	h, err := findHost(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	n := hostState(h, state, vmState, event)
	return map[string]interface{}{"host": h.Self.Value, "vms": n}, nil
}

// hostState sets the connection state of a host and its VMs and posts event; returns the VM count.
func hostState(h *simulator.HostSystem, state types.HostSystemConnectionState, vmState types.VirtualMachineConnectionState, event types.BaseEvent) int {
	var vms []types.ManagedObjectReference
	simulator.Map.WithLock(h, func() {
		simulator.Map.Update(h, []types.PropertyChange{
			{Name: "runtime.connectionState", Val: state},
			{Name: "summary.runtime.connectionState", Val: state},
		})
	})
	vms = vmsOn(h.Self)
	for _, ref := range vms {
		vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "runtime.connectionState", Val: vmState},
				{Name: "summary.runtime.connectionState", Val: vmState},
			})
		})
	}
	e := event.GetEvent()
	e.Host = &types.HostEventArgument{EntityEventArgument: types.EntityEventArgument{Name: h.Name}, Host: h.Self}
	if h.Parent != nil {
		if p, ok := simulator.Map.Get(*h.Parent).(mo.Entity); ok {
			e.ComputeResource = &types.ComputeResourceEventArgument{
				EntityEventArgument: types.EntityEventArgument{Name: p.Entity().Name},
				ComputeResource:     p.Reference(),
			}
		}
	}
	postEvent(event, "")
	return len(vms)
}

// systemContext is a simulator context for calls the test bed makes itself, as the system.
func systemContext() *simulator.Context {
	return &simulator.Context{
		Context: context.Background(),
		Session: &simulator.Session{UserSession: types.UserSession{UserName: ""}, Registry: simulator.NewRegistry()},
		Map:     simulator.Map,
	}
}

// postEvent posts an event as the system (userName empty unless given), like vpxd does.
func postEvent(event types.BaseEvent, user string) {
	em := simulator.Map.EventManager()
	ctx := &simulator.Context{
		Context: context.Background(),
		Session: &simulator.Session{UserSession: types.UserSession{UserName: user}, Registry: simulator.NewRegistry()},
		Map:     simulator.Map,
	}
	simulator.Map.WithLock(em, func() {
		em.PostEvent(ctx, &types.PostEvent{EventToPost: event})
	})
}

func (c *controller) hostNotResponding(r *http.Request) (interface{}, error) {
	return setHostConnection(r, types.HostSystemConnectionStateNotResponding,
		types.VirtualMachineConnectionStateDisconnected, &types.HostConnectionLostEvent{})
}

func (c *controller) hostConnected(r *http.Request) (interface{}, error) {
	return setHostConnection(r, types.HostSystemConnectionStateConnected,
		types.VirtualMachineConnectionStateConnected, &types.HostConnectedEvent{})
}

// entityStatus is the request's status: green, yellow, red or gray.
func entityStatus(r *http.Request) (types.ManagedEntityStatus, error) {
	status := types.ManagedEntityStatus(r.FormValue("status"))
	switch status {
	case types.ManagedEntityStatusGreen, types.ManagedEntityStatusYellow, types.ManagedEntityStatusRed, types.ManagedEntityStatusGray:
		return status, nil
	}
	return "", fmt.Errorf("status must be green, yellow, red or gray")
}

// hostHealth sets a host's overall status (red: a red alarm, e.g. hardware health, on a host
// that is still connected).
func (c *controller) hostHealth(r *http.Request) (interface{}, error) {
	h, err := findHost(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	status, err := entityStatus(r)
	if err != nil {
		return nil, err
	}
	simulator.Map.WithLock(h, func() {
		simulator.Map.Update(h, []types.PropertyChange{
			{Name: "overallStatus", Val: status},
			{Name: "summary.overallStatus", Val: status},
		})
	})
	return map[string]string{"host": h.Self.Value, "overallStatus": string(status)}, nil
}

func (c *controller) vmHeartbeat(r *http.Request) (interface{}, error) {
	vm, err := findVM(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	status, err := entityStatus(r)
	if err != nil {
		return nil, err
	}
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "guestHeartbeatStatus", Val: status},
			{Name: "summary.quickStats.guestHeartbeatStatus", Val: status},
		})
	})
	return map[string]string{"vm": vm.Self.Value, "guestHeartbeatStatus": string(status)}, nil
}

func (c *controller) vmTools(r *http.Request) (interface{}, error) {
	vm, err := findVM(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	status := types.VirtualMachineToolsStatus(r.FormValue("status"))
	running := r.FormValue("running")
	if running == "" {
		running = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
	}
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "guest.toolsStatus", Val: status},
			{Name: "guest.toolsRunningStatus", Val: running},
			{Name: "summary.guest.toolsStatus", Val: status},
			{Name: "summary.guest.toolsRunningStatus", Val: running},
		})
	})
	return map[string]string{"vm": vm.Self.Value, "toolsStatus": string(status), "toolsRunningStatus": running}, nil
}

// vmPowerOff powers a VM off through the SDK as the named user, so vcsim records a
// VmPoweredOffEvent with that userName, as vCenter does for a user's power-off.
func (c *controller) vmPowerOff(r *http.Request) (interface{}, error) {
	vm, err := findVM(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	user := r.FormValue("user")
	if user == "" {
		return nil, fmt.Errorf("user is required")
	}
	u := c.sdk
	u.User = url.UserPassword(user, "control")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := govmomi.NewClient(ctx, &u, true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = client.Logout(ctx) }()
	task, err := object.NewVirtualMachine(client.Client, vm.Self).PowerOff(ctx)
	if err != nil {
		return nil, err
	}
	if err := task.Wait(ctx); err != nil {
		return nil, err
	}
	return map[string]string{"vm": vm.Self.Value, "user": user}, nil
}

func (c *controller) addRule(r *http.Request) (interface{}, error) {
	rl := &rule{
		Method:  r.FormValue("method"),
		Object:  r.FormValue("object"),
		Fault:   r.FormValue("fault"),
		Message: r.FormValue("message"),
		Detail:  r.FormValue("detail"),
		Count:   1,
	}
	if rl.Method == "" {
		return nil, fmt.Errorf("method is required")
	}
	for name, dst := range map[string]*int{"http": &rl.HTTP, "ms": &rl.DelayMs, "count": &rl.Count} {
		if v := r.FormValue(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", name, err)
			}
			*dst = n
		}
	}
	if strings.HasSuffix(r.URL.Path, "/fault") && rl.Fault == "" && rl.HTTP == 0 {
		return nil, fmt.Errorf("fault or http is required")
	}
	c.inj.mu.Lock()
	c.inj.rules = append(c.inj.rules, rl)
	c.inj.mu.Unlock()
	return rl, nil
}

// vmAttribute sets a custom attribute (custom field) on a VM, defining it for VirtualMachine
// first if needed; the VM's customValue, value and availableField reach WaitForUpdates.
func (c *controller) vmAttribute(r *http.Request) (interface{}, error) {
	vm, err := findVM(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	key := r.FormValue("key")
	if key == "" {
		return nil, fmt.Errorf("key is required")
	}
	value := r.FormValue("value")
	cfm := simulator.Map.CustomFieldsManager()
	var def types.CustomFieldDef
	var fault error
	created := false
	simulator.Map.WithLock(cfm, func() {
		for _, f := range cfm.Field {
			if f.Name == key && (f.ManagedObjectType == "VirtualMachine" || f.ManagedObjectType == "") {
				def = f
				return
			}
		}
		res := cfm.AddCustomFieldDef(&types.AddCustomFieldDef{This: cfm.Self, Name: key, MoType: "VirtualMachine"})
		body := res.(*methods.AddCustomFieldDefBody)
		if body.Fault_ != nil {
			fault = fmt.Errorf("AddCustomFieldDef %s: %s", key, body.Fault_.String)
			return
		}
		def = body.Res.Returnval
		created = true
		simulator.Map.Update(cfm, []types.PropertyChange{{Name: "field", Val: append([]types.CustomFieldDef(nil), cfm.Field...)}})
	})
	if fault != nil {
		return nil, fault
	}
	simulator.Map.WithLock(vm, func() {
		nv := &types.CustomFieldStringValue{CustomFieldValue: types.CustomFieldValue{Key: def.Key}, Value: value}
		set := func(list []types.BaseCustomFieldValue) []types.BaseCustomFieldValue {
			var out []types.BaseCustomFieldValue
			done := false
			for _, v := range list {
				if v.GetCustomFieldValue().Key == def.Key {
					if !done {
						out = append(out, nv)
						done = true
					}
					continue
				}
				out = append(out, v)
			}
			if !done {
				out = append(out, nv)
			}
			return out
		}
		avail := append([]types.CustomFieldDef(nil), vm.AvailableField...)
		found := false
		for _, f := range avail {
			if f.Key == def.Key {
				found = true
			}
		}
		if !found {
			avail = append(avail, def)
		}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "customValue", Val: set(vm.CustomValue)},
			{Name: "value", Val: set(vm.Value)},
			{Name: "availableField", Val: avail},
		})
	})
	return map[string]interface{}{"vm": vm.Self.Value, "key": def.Key, "name": key, "value": value, "defined": created}, nil
}

// parseBool-like helpers for up/down parameters.
func upDown(r *http.Request, name string, def bool) (bool, error) {
	switch strings.ToLower(r.FormValue(name)) {
	case "":
		return def, nil
	case "up":
		return true, nil
	case "down":
		return false, nil
	}
	return false, fmt.Errorf("%s must be up or down", name)
}
