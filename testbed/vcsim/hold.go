package main

// Holds: SOAP calls of a method that block before reaching vcsim until the control endpoint
// releases them, then go on to vcsim (then=forward) or are answered with a plain HTTP 503 without
// reaching it (then=drop). A test can so kill a client in the middle of a call and let vCenter
// finish it afterwards (or not).

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

type holdRule struct {
	Method string `json:"method"`
	Object string `json:"object,omitempty"`
	Then   string `json:"then"`
}

type heldCall struct {
	method, object, then string
	since                time.Time
	release              chan struct{} // closed by release
	done                 chan struct{} // closed once the call was forwarded or dropped
}

type holds struct {
	mu    sync.Mutex
	rules []*holdRule
	held  []*heldCall
}

// block registers a call that a rule holds, or returns nil.
func (hs *holds) block(method, object string) *heldCall {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, r := range hs.rules {
		if r.Method == method && (r.Object == "" || r.Object == object) {
			hc := &heldCall{method: method, object: object, then: r.Then, since: time.Now(),
				release: make(chan struct{}), done: make(chan struct{})}
			hs.held = append(hs.held, hc)
			return hc
		}
	}
	return nil
}

func (hs *holds) add(r *holdRule) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for i, old := range hs.rules {
		if old.Method == r.Method && old.Object == r.Object {
			hs.rules[i] = r
			return
		}
	}
	hs.rules = append(hs.rules, r)
}

// release removes the rules for method (all when empty; only those on object when given) and
// releases the calls they hold; it waits (up to 30 s) until those calls were forwarded or dropped.
func (hs *holds) release(method, object string) (int, bool) {
	hs.mu.Lock()
	match := func(m, o string) bool {
		return (method == "" || m == method) && (object == "" || o == object)
	}
	rules := hs.rules[:0]
	for _, r := range hs.rules {
		if !match(r.Method, r.Object) {
			rules = append(rules, r)
		}
	}
	hs.rules = rules
	var released []*heldCall
	kept := hs.held[:0]
	for _, hc := range hs.held {
		if match(hc.method, hc.object) {
			released = append(released, hc)
		} else {
			kept = append(kept, hc)
		}
	}
	hs.held = kept
	hs.mu.Unlock()
	for _, hc := range released {
		close(hc.release)
	}
	deadline := time.After(30 * time.Second)
	for _, hc := range released {
		select {
		case <-hc.done:
		case <-deadline:
			return len(released), false
		}
	}
	return len(released), true
}

type heldInfo struct {
	Method  string `json:"method"`
	Object  string `json:"object"`
	Then    string `json:"then"`
	SinceMs int64  `json:"since_ms"`
}

func (hs *holds) list() []heldInfo {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	out := []heldInfo{}
	for _, hc := range hs.held {
		out = append(out, heldInfo{Method: hc.method, Object: hc.object, Then: hc.then,
			SinceMs: time.Since(hc.since).Milliseconds()})
	}
	return out
}

func (c *controller) hold(r *http.Request) (interface{}, error) {
	rl := &holdRule{Method: r.FormValue("method"), Object: r.FormValue("object"), Then: r.FormValue("then")}
	if rl.Method == "" {
		return nil, fmt.Errorf("method is required")
	}
	switch rl.Then {
	case "":
		rl.Then = "forward"
	case "forward", "drop":
	default:
		return nil, fmt.Errorf("then must be forward or drop")
	}
	c.inj.holds.add(rl)
	return rl, nil
}

func (c *controller) held(w http.ResponseWriter, r *http.Request) {
	reply(w, c.inj.holds.list(), nil)
}

func (c *controller) release(r *http.Request) (interface{}, error) {
	n, finished := c.inj.holds.release(r.FormValue("method"), r.FormValue("object"))
	return map[string]interface{}{"released": n, "finished": finished}, nil
}
