// Command govmomi-bench reads the inventory (hosts and VMs with about 15 properties each) through
// govmomi's property collector, the reference for vsphere-soap's benchmark (cargo xtask bench-soap).
//
// It prints one line: RESULT client=govmomi objects=N median_ms=X min_ms=Y max_rss_kb=Z
package main

import (
	"context"
	"flag"
	"fmt"
	"io/ioutil"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// The same properties as crates/vsphere-soap/examples/inventory_bench.rs.
var (
	vmProps = []string{"name", "runtime.connectionState", "runtime.powerState", "runtime.host",
		"summary.config.memorySizeMB", "summary.config.numCpu", "summary.config.vmPathName", "guest.ipAddress",
		"guest.toolsRunningStatus", "guestHeartbeatStatus", "summary.quickStats.overallCpuUsage",
		"summary.quickStats.guestMemoryUsage", "datastore", "snapshot", "resourcePool"}
	hostProps = []string{"name", "parent", "runtime.connectionState", "runtime.inMaintenanceMode",
		"runtime.powerState", "summary.hardware.numCpuCores", "summary.hardware.cpuMhz",
		"summary.hardware.memorySize", "summary.quickStats.overallCpuUsage",
		"summary.quickStats.overallMemoryUsage", "datastore", "vm"}
)

func main() {
	rawURL := flag.String("url", "", "SDK URL")
	iterations := flag.Int("iterations", 5, "timed inventory reads")
	flag.Parse()

	ctx := context.Background()
	u, err := url.Parse(*rawURL)
	if err != nil {
		fail(err)
	}
	u.User = url.UserPassword("bench", "bench")
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		fail(err)
	}
	defer func() { _ = c.Logout(ctx) }()

	var times []float64
	objects := 0
	for i := 0; i < *iterations+1; i++ { // the first read warms up and is not timed
		start := time.Now()
		n, err := readInventory(ctx, c)
		if err != nil {
			fail(err)
		}
		if i > 0 {
			times = append(times, float64(time.Since(start).Microseconds())/1000)
		}
		objects = n
	}
	sort.Float64s(times)
	fmt.Printf("RESULT client=govmomi objects=%d median_ms=%.1f min_ms=%.1f max_rss_kb=%d\n",
		objects, times[len(times)/2], times[0], maxRSS())
}

func readInventory(ctx context.Context, c *govmomi.Client) (int, error) {
	m := view.NewManager(c.Client)
	v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"HostSystem", "VirtualMachine"}, true)
	if err != nil {
		return 0, err
	}
	defer func() { _ = v.Destroy(ctx) }()

	req := types.RetrieveProperties{SpecSet: []types.PropertyFilterSpec{{
		ObjectSet: []types.ObjectSpec{{
			Obj:  v.Reference(),
			Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{
				Type: "ContainerView",
				Path: "view",
			}},
		}},
		PropSet: []types.PropertySpec{
			{Type: "VirtualMachine", PathSet: vmProps},
			{Type: "HostSystem", PathSet: hostProps},
		},
	}}}
	res, err := property.DefaultCollector(c.Client).RetrieveProperties(ctx, req)
	if err != nil {
		return 0, err
	}
	var vmContent, hostContent []types.ObjectContent
	for _, oc := range res.Returnval {
		if oc.Obj.Type == "VirtualMachine" {
			vmContent = append(vmContent, oc)
		} else {
			hostContent = append(hostContent, oc)
		}
	}
	var vms []mo.VirtualMachine
	var hosts []mo.HostSystem
	if err := mo.LoadObjectContent(vmContent, &vms); err != nil {
		return 0, err
	}
	if err := mo.LoadObjectContent(hostContent, &hosts); err != nil {
		return 0, err
	}
	return len(vms) + len(hosts), nil
}

// maxRSS is the process's peak resident set (VmHWM) in KiB.
func maxRSS() int {
	b, err := ioutil.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb int
			_, _ = fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%d", &kb)
			return kb
		}
	}
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "govmomi-bench:", err)
	os.Exit(1)
}
