package main

// pack.go: -pack N puts N VMs on one host before the simulator serves (an evacuation
// benchmark's source host): vcsim places VMs at random within a cluster.

import (
	"fmt"
	"sort"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// packVMs moves VMs onto the host whose name sorts first until it runs n of them.
func packVMs(n int) (string, error) {
	hosts := simulator.Map.All("HostSystem")
	if len(hosts) == 0 {
		return "", fmt.Errorf("no host")
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Entity().Name < hosts[j].Entity().Name })
	first, ok := hosts[0].(*simulator.HostSystem)
	if !ok {
		return "", fmt.Errorf("not a host: %v", hosts[0].Reference())
	}
	vms := simulator.Map.All("VirtualMachine")
	sort.Slice(vms, func(i, j int) bool { return vms[i].Entity().Name < vms[j].Entity().Name })
	on := 0
	for _, e := range vms {
		if vm, ok := e.(*simulator.VirtualMachine); ok && vm.Runtime.Host != nil && *vm.Runtime.Host == first.Self {
			on++
		}
	}
	for _, e := range vms {
		if on >= n {
			break
		}
		vm, ok := e.(*simulator.VirtualMachine)
		if !ok || vm.Runtime.Host == nil || *vm.Runtime.Host == first.Self {
			continue
		}
		if old, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
			simulator.Map.RemoveReference(old, &old.Vm, vm.Self)
		}
		simulator.Map.AddReference(first, &first.Vm, vm.Self)
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "runtime.host", Val: first.Self},
			{Name: "summary.runtime.host", Val: first.Self},
		})
		on++
	}
	if on < n {
		return "", fmt.Errorf("only %d VMs in all, %d asked on one host", on, n)
	}
	return first.Name, nil
}
