// Command am-vcsim runs govmomi's vCenter simulator with a small inventory and a control endpoint
// that injects the faults a real vCenter shows: a host not responding, a red guest heartbeat,
// VMware Tools state, a power-off by a named user, API faults and delays.
//
// It prints, one per line on stdout:
//
//	VCSIM_URL=https://127.0.0.1:PORT/sdk
//	VCSIM_CONTROL=http://127.0.0.1:PORT
//	VCSIM_THUMBPRINT=AB:CD:...   (SHA-256 of the server certificate, with -tls)
//	VCSIM_CA=/path/ca.pem         (the CA that signed it, with -tls)
//	VCSIM_READY
//
// Build (Debian's govmomi, GOPATH mode):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o target/vcsim/am-vcsim ./testbed/vcsim
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "SDK listen address (loopback)")
	control := flag.String("control", "127.0.0.1:0", "control endpoint listen address (loopback)")
	clusters := flag.Int("clusters", 1, "number of clusters")
	hosts := flag.Int("hosts", 3, "hosts per cluster")
	vmsPerHost := flag.Int("vms-per-host", 2, "VMs per host (placed by vcsim at random within the cluster)")
	useTLS := flag.Bool("tls", true, "serve HTTPS with a generated CA and certificate")
	certDir := flag.String("cert-dir", "", "directory for ca.pem (default: a new temporary directory)")
	seed := flag.Int64("seed", 1, "random seed for VM placement")
	verbose := flag.Bool("verbose", false, "keep vcsim's log on stderr")
	stdinExit := flag.Bool("exit-on-stdin-eof", false, "exit when stdin closes (so a test's child dies with it)")
	flag.Parse()

	if !*verbose {
		log.SetOutput(ioutil.Discard)
	}
	mrand.Seed(*seed)

	model := simulator.VPX()
	model.Datacenter = 1
	model.Host = 0
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	model.Machine = *hosts * *vmsPerHost
	model.Pool = 0
	model.App = 0
	if err := model.Create(); err != nil {
		fatal("creating the model: %v", err)
	}
	defer model.Remove()

	var thumbprint, caFile string
	if *useTLS {
		dir := *certDir
		if dir == "" {
			d, err := ioutil.TempDir("", "am-vcsim-")
			if err != nil {
				fatal("%v", err)
			}
			dir = d
			defer os.RemoveAll(d)
		}
		cert, ca, err := makeCerts()
		if err != nil {
			fatal("certificates: %v", err)
		}
		caFile = filepath.Join(dir, "ca.pem")
		if err := ioutil.WriteFile(caFile, ca, 0o644); err != nil {
			fatal("%v", err)
		}
		sum := sha256.Sum256(cert.Certificate[0])
		thumbprint = colonHex(sum[:])
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	model.Service.Listen = &url.URL{Host: *listen}

	srv := model.Service.NewServer()
	defer srv.Close()

	inj := &injector{}
	// The server is started but no client knows its address yet: wrapping the handler now is safe.
	srv.Config.Handler = inj.wrap(srv.Config.Handler)

	sdk := url.URL{Scheme: srv.URL.Scheme, Host: srv.URL.Host, Path: srv.URL.Path}
	ctl := &controller{sdk: sdk, inj: inj}
	ln, err := net.Listen("tcp", *control)
	if err != nil {
		fatal("control listener: %v", err)
	}
	go func() { _ = http.Serve(ln, ctl.mux()) }()

	fmt.Printf("VCSIM_URL=%s\n", sdk.String())
	fmt.Printf("VCSIM_CONTROL=http://%s\n", ln.Addr().String())
	if *useTLS {
		fmt.Printf("VCSIM_THUMBPRINT=%s\nVCSIM_CA=%s\n", thumbprint, caFile)
	}
	fmt.Println("VCSIM_READY")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	if *stdinExit {
		go func() {
			_, _ = io.Copy(ioutil.Discard, os.Stdin)
			stop <- syscall.SIGTERM
		}()
	}
	<-stop
}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "am-vcsim: "+format+"\n", args...)
	os.Exit(1)
}

func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}

// makeCerts returns a server certificate for 127.0.0.1/::1/localhost signed by a new CA, and the CA's PEM.
func makeCerts() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "am-vcsim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour * 365),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour * 365),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

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
		rl := inj.take(method, object)
		if rl == nil {
			if !extra(next, w, r, method, object, body) {
				next.ServeHTTP(w, r)
			}
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
			if !extra(next, w, r, method, object, body) {
				next.ServeHTTP(w, r)
			}
		}
	})
}

// extra serves the methods vcsim 0.24.2 lacks, as vCenter does: DisconnectHost_Task,
// ReconnectHost_Task, and MigrateVM_Task (served by vcsim's RelocateVM_Task).
func extra(next http.Handler, w http.ResponseWriter, r *http.Request, method, object string, body []byte) bool {
	switch method {
	case "DisconnectHost_Task", "ReconnectHost_Task":
		h, err := findHost(object)
		if err != nil {
			writeFault(w, &rule{Fault: "ManagedObjectNotFound", Message: err.Error()})
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
	}
	return false
}

func writeTaskResponse(w http.ResponseWriter, method string, task types.ManagedObjectReference) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><%sResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></%sResponse></soapenv:Body></soapenv:Envelope>`, method, task.Value, method)
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
	m.HandleFunc("/vm/tools", c.post(c.vmTools))
	m.HandleFunc("/vm/power-off", c.post(c.vmPowerOff))
	m.HandleFunc("/fault", c.post(c.addRule))
	m.HandleFunc("/delay", c.post(c.addRule))
	m.HandleFunc("/reset", c.post(func(r *http.Request) (interface{}, error) {
		c.inj.mu.Lock()
		c.inj.rules = nil
		c.inj.mu.Unlock()
		return map[string]string{"status": "ok"}, nil
	}))
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
	Name string `json:"name"`
	Ref  string `json:"ref"`
}

type hostInfo struct {
	Name    string   `json:"name"`
	Ref     string   `json:"ref"`
	Cluster string   `json:"cluster"`
	VMs     []vmInfo `json:"vms"`
}

func (c *controller) inventory(w http.ResponseWriter, r *http.Request) {
	var out []hostInfo
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		var hi hostInfo
		simulator.Map.WithLock(h, func() {
			hi = hostInfo{Name: h.Name, Ref: h.Self.Value}
			if h.Parent != nil {
				if p, ok := simulator.Map.Get(*h.Parent).(mo.Entity); ok {
					hi.Cluster = p.Entity().Name
				}
			}
			for _, ref := range h.Vm {
				if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
					hi.VMs = append(hi.VMs, vmInfo{Name: vm.Name, Ref: ref.Value})
				}
			}
		})
		out = append(out, hi)
	}
	reply(w, out, nil)
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
		vms = append(vms, h.Vm...)
	})
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

func (c *controller) vmHeartbeat(r *http.Request) (interface{}, error) {
	vm, err := findVM(r.FormValue("name"))
	if err != nil {
		return nil, err
	}
	status := types.ManagedEntityStatus(r.FormValue("status"))
	switch status {
	case types.ManagedEntityStatusGreen, types.ManagedEntityStatusYellow, types.ManagedEntityStatusRed, types.ManagedEntityStatusGray:
	default:
		return nil, fmt.Errorf("status must be green, yellow, red or gray")
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

