package main

// Out-of-band power: /bmc/notify takes the system JSON that sushy-tools' fake Redfish driver PUTs
// to its EXTERNAL_NOTIFICATION_URL on every change of a system (with "external_notifier": true),
// and makes the host of that name go down (as /host/poweroff) or come back (as /host/revive).
//
// The fake driver applies a power change lazily: a Reset stores {"pending_power": {"power_state":
// ..., "apply_time": T}} (one notification, the old power_state) and the next read of the system
// after T (1-11 s later) sets power_state and clears pending_power (a second notification). A
// ForceRestart/GracefulRestart sets power_state Off at once with the restart pending, and On when
// it is applied.

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"net/http"
	"strings"
)

type bmcPending struct {
	PowerState string  `json:"power_state"`
	ApplyTime  float64 `json:"apply_time"`
}

type bmcSystem struct {
	UUID         string      `json:"uuid"`
	Name         string      `json:"name"`
	PowerState   string      `json:"power_state"`
	PendingPower *bmcPending `json:"pending_power"`
}

// bmcNotify always answers 200 with what it did: {"action": "poweroff"|"revive"|"none", "reason",
// "host", "power_state", "pending", "result"}.
func (c *controller) bmcNotify(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		http.Error(w, "PUT or POST only", http.StatusMethodNotAllowed)
		return
	}
	out := map[string]interface{}{"action": "none"}
	body, err := ioutil.ReadAll(r.Body)
	var sys bmcSystem
	if err == nil {
		err = json.Unmarshal(body, &sys)
	}
	if err != nil {
		out["reason"] = fmt.Sprintf("not a system's JSON: %v", err)
		reply(w, out, nil)
		return
	}
	out["host"], out["power_state"], out["uuid"] = sys.Name, sys.PowerState, sys.UUID
	if sys.PendingPower != nil {
		out["pending"] = sys.PendingPower.PowerState
	}
	action, reason, result := bmcApply(sys)
	out["action"], out["reason"] = action, reason
	if result != nil {
		out["result"] = result
	}
	reply(w, out, nil)
}

// bmcApply decides and does what a notification means for the host of that name.
func bmcApply(sys bmcSystem) (string, string, interface{}) {
	h, err := findHost(sys.Name)
	if err != nil {
		return "none", err.Error(), nil
	}
	off := sys.PowerState == "Off"
	if p := sys.PendingPower; p != nil {
		// A restart in progress is reported Off by the BMC: the host is down until it is applied.
		if !(off && strings.Contains(p.PowerState, "Restart")) {
			return "none", "power change to " + p.PowerState + " pending", nil
		}
	}
	w := theWorld
	w.mu.Lock()
	hm := w.model(h)
	down := hm.down || !hm.alive
	w.mu.Unlock()
	switch {
	case off && down:
		return "none", "already down", nil
	case off:
		_, died, err := hostDownNamed(h.Self.Value)
		if err != nil {
			return "none", err.Error(), nil
		}
		reason := "powered off by its BMC"
		if sys.PendingPower != nil {
			reason = "restarting by its BMC: down until the restart is applied"
		}
		return "poweroff", reason, map[string]interface{}{"host": h.Self.Value, "off": true, "stopped": died}
	case sys.PowerState == "On" && down:
		res, err := healNamed(h.Self.Value, true)
		if err != nil {
			return "none", err.Error(), nil
		}
		return "revive", "powered on by its BMC", res
	case sys.PowerState == "On":
		return "none", "already up", nil
	}
	return "none", "power state " + sys.PowerState + " means nothing here", nil
}
