package main

// The SOAP side: the handler wrapper in front of vcsim that holds calls, injects faults and
// delays, and serves what vcsim 0.24.2 lacks or gets wrong (extra).

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// rule is one injected fault or delay for a SOAP method (optionally only on one object).
type rule struct {
	Method  string `json:"method"`
	Object  string `json:"object,omitempty"`
	Fault   string `json:"fault,omitempty"`
	Message string `json:"message,omitempty"`
	Detail  string `json:"detail,omitempty"`
	HTTP    int    `json:"http,omitempty"`
	DelayMs int    `json:"delay_ms,omitempty"`
	Count   int    `json:"count"` // remaining uses; negative: forever
}

type injector struct {
	mu    sync.Mutex
	rules []*rule
	holds holds
	// calls counts the SOAP calls served, per method, with the time spent serving them (GET
	// /calls): what a benchmark reports as the load it put on vCenter.
	calls map[string]*callCount
}

// callCount is one method's calls and the wall time spent in them (ms).
type callCount struct {
	Count int     `json:"count"`
	Ms    float64 `json:"ms"`
}

// count records one call of method that took d.
func (inj *injector) count(method string, d time.Duration) {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if inj.calls == nil {
		inj.calls = map[string]*callCount{}
	}
	c := inj.calls[method]
	if c == nil {
		c = &callCount{}
		inj.calls[method] = c
	}
	c.Count++
	c.Ms += float64(d) / float64(time.Millisecond)
}

// counts is a copy of the calls counted so far.
func (inj *injector) counts() map[string]callCount {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	out := make(map[string]callCount, len(inj.calls))
	for m, c := range inj.calls {
		out[m] = *c
	}
	return out
}

var (
	methodRe = regexp.MustCompile(`<(?:[\w-]+:)?Body[^>]*>\s*<(?:[\w-]+:)?([\w]+)`)
	thisRe   = regexp.MustCompile(`<_this[^>]*>([^<]*)</_this>`)
)

// take returns the first matching rule and uses it up.
func (inj *injector) take(method, object string) *rule {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	for i, r := range inj.rules {
		if r.Method != method || (r.Object != "" && r.Object != object) {
			continue
		}
		c := *r
		if r.Count > 0 {
			r.Count--
			if r.Count == 0 {
				inj.rules = append(inj.rules[:i], inj.rules[i+1:]...)
			}
		}
		return &c
	}
	return nil
}

func (inj *injector) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/sdk") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := ioutil.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
		var method, object string
		if m := methodRe.FindSubmatch(body); m != nil {
			method = string(m[1])
		}
		if m := thisRe.FindSubmatch(body); m != nil {
			object = string(m[1])
		}
		started := time.Now()
		defer func() { inj.count(method, time.Since(started)) }()
		if hc := inj.holds.block(method, object); hc != nil {
			// Blocked until /release (or /reset); the client may be gone by then: the call is
			// still forwarded (or dropped) as the hold said.
			<-hc.release
			defer close(hc.done)
			if hc.then == "drop" {
				http.Error(w, "dropped by an am-vcsim hold", http.StatusServiceUnavailable)
				return
			}
			r = r.Clone(context.Background())
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
		}
		serve := func() {
			run := func(w http.ResponseWriter) {
				if !extra(next, w, r, method, object, body) {
					next.ServeHTTP(w, r)
				}
				if theWorld != nil {
					// So that a client reading right after its call sees addresses and locks.
					theWorld.reconcileIfDirty()
				}
			}
			if theNested != nil && nestedWatched(method) {
				// The admin side of nested hosts tells the managed test bed before answering.
				theNested.serve(w, method, object, body, run)
				return
			}
			run(w)
		}
		rl := inj.take(method, object)
		if rl == nil {
			serve()
			return
		}
		if rl.DelayMs > 0 {
			time.Sleep(time.Duration(rl.DelayMs) * time.Millisecond)
		}
		switch {
		case rl.HTTP != 0:
			http.Error(w, "injected HTTP error", rl.HTTP)
		case rl.Fault != "":
			writeFault(w, rl)
		default:
			serve()
		}
	})
}

// extra serves the methods vcsim 0.24.2 lacks, as vCenter does: DisconnectHost_Task,
// ReconnectHost_Task, and MigrateVM_Task (served by vcsim's RelocateVM_Task); and refuses what
// vCenter refuses where vcsim does not: PowerOnVM_Task of locked files, RegisterVM_Task on a host
// without the datastore; CreateNasDatastore of an existing export mounts it.
func extra(next http.Handler, w http.ResponseWriter, r *http.Request, method, object string, body []byte) bool {
	switch method {
	case "DisconnectHost_Task", "ReconnectHost_Task":
		h, err := findHost(object)
		if err != nil {
			writeFault(w, &rule{Fault: "ManagedObjectNotFound", Message: err.Error()})
			return true
		}
		if method == "ReconnectHost_Task" && theWorld != nil && !theWorld.reachable(h.Self) {
			msg := fmt.Sprintf("Cannot contact the specified host (%s). The host may not be available on the network, a network configuration problem may exist, or the management services on this host may not be responding.", h.Name)
			writeTaskResponse(w, method, failTask(h, "reconnect", &types.HostConnectFault{}, msg))
			return true
		}
		name, state, vmState := "disconnect", types.HostSystemConnectionStateDisconnected, types.VirtualMachineConnectionStateDisconnected
		var event types.BaseEvent = &types.HostDisconnectedEvent{}
		if method == "ReconnectHost_Task" {
			name, state, vmState = "reconnect", types.HostSystemConnectionStateConnected, types.VirtualMachineConnectionStateConnected
			event = &types.HostConnectedEvent{}
		}
		task := simulator.CreateTask(h, name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			hostState(h, state, vmState, event)
			return nil, nil
		})
		writeTaskResponse(w, method, task.Run())
		return true
	case "MigrateVM_Task":
		pool := regexp.MustCompile(`<pool[^>]*>[^<]*</pool>`).Find(body)
		host := regexp.MustCompile(`<host[^>]*>[^<]*</host>`).Find(body)
		this := thisRe.Find(body)
		var b bytes.Buffer
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RelocateVM_Task xmlns="urn:vim25">`)
		b.Write(this)
		b.WriteString("<spec>")
		b.Write(pool)
		b.Write(host)
		b.WriteString("</spec></RelocateVM_Task></soapenv:Body></soapenv:Envelope>")
		r2 := r.Clone(r.Context())
		r2.Body = ioutil.NopCloser(&b)
		r2.ContentLength = int64(b.Len())
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r2)
		out := bytes.ReplaceAll(rec.Body.Bytes(), []byte("RelocateVM_TaskResponse"), []byte("MigrateVM_TaskResponse"))
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(out)
		return true
	case "PowerOnVM_Task":
		if theWorld == nil {
			return false
		}
		vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: object}).(*simulator.VirtualMachine)
		if !ok {
			return false
		}
		vmx, holders := theWorld.lockedElsewhere(vm)
		if len(holders) == 0 {
			return false
		}
		msg := fmt.Sprintf("Unable to access file %s since it is locked", vmx)
		fault := &types.FileLocked{FileFault: types.FileFault{File: vmx}}
		writeTaskResponse(w, method, failTask(vm, "powerOn", fault, msg))
		return true
	case "RegisterVM_Task":
		return refuseRegister(w, method, object, soapArgs(body))
	case "CloneVM_Task":
		return refuseClone(w, method, object, soapArgs(body))
	case "CreateNasDatastore":
		return createNasDatastore(w, object, soapArgs(body))
	}
	return false
}

// failTask creates a task on obj that fails at once with fault and message msg (vcsim's own
// Task.Run would give the fault's Go type as the message).
func failTask(obj mo.Reference, name string, fault types.BaseMethodFault, msg string) types.ManagedObjectReference {
	task := simulator.CreateTask(obj, name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, fault
	})
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.startTime", Val: time.Now()},
		{Name: "info.state", Val: types.TaskInfoStateRunning},
	})
	_, f := task.Execute(task)
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.completeTime", Val: time.Now()},
		{Name: "info.state", Val: types.TaskInfoStateError},
		{Name: "info.result", Val: nil},
		{Name: "info.error", Val: types.LocalizedMethodFault{Fault: f, LocalizedMessage: msg}},
	})
	return task.Self
}

func writeTaskResponse(w http.ResponseWriter, method string, task types.ManagedObjectReference) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><%sResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></%sResponse></soapenv:Body></soapenv:Envelope>`, method, task.Value, method)
}

// writeMorefResponse answers method with a managed object reference.
func writeMorefResponse(w http.ResponseWriter, method string, ref types.ManagedObjectReference) {
	var b bytes.Buffer
	_ = xmlEscape(&b, ref.Value)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><%sResponse xmlns="urn:vim25"><returnval type="%s">%s</returnval></%sResponse></soapenv:Body></soapenv:Envelope>`, method, ref.Type, b.String(), method)
}

func writeFault(w http.ResponseWriter, rl *rule) {
	msg := rl.Message
	if msg == "" {
		msg = "injected " + rl.Fault
	}
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>`)
	b.WriteString(`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`)
	b.WriteString(`<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>`)
	_ = xmlEscape(&b, msg)
	fmt.Fprintf(&b, `</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s">%s</%sFault></detail>`, rl.Fault, rl.Fault, rl.Detail, rl.Fault)
	b.WriteString(`</soapenv:Fault></soapenv:Body></soapenv:Envelope>`)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(b.Bytes())
}

func xmlEscape(b *bytes.Buffer, s string) error {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	_, err := r.WriteString(b, s)
	return err
}

func xmlText(s string) string {
	var b bytes.Buffer
	_ = xmlEscape(&b, s)
	return b.String()
}

// soapArgs returns the text of the SOAP call's argument elements by their path below the method
// element ("path", "spec/remoteHost", "spec/location/host"); the first occurrence of each path.
func soapArgs(body []byte) map[string]string {
	out := map[string]string{}
	dec := xml.NewDecoder(bytes.NewReader(body))
	var stack []string
	var text bytes.Buffer
	bodyAt := -1
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if bodyAt < 0 && t.Name.Local == "Body" {
				bodyAt = len(stack)
			}
			stack = append(stack, t.Name.Local)
			text.Reset()
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			if bodyAt >= 0 && len(stack) > bodyAt+2 {
				key := strings.Join(stack[bodyAt+2:], "/")
				if _, ok := out[key]; !ok {
					out[key] = strings.TrimSpace(text.String())
				}
			}
			text.Reset()
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}
