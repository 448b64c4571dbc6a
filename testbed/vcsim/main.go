// Command am-vcsim runs govmomi's vCenter simulator with a small inventory and a control endpoint
// that injects the faults a real vCenter shows: a host not responding, a red guest heartbeat,
// VMware Tools state, a power-off by a named user, API faults and delays. Behind vCenter's view
// it keeps a liveness model (world.go): hosts alive, partitioned or crashed, VMs running (also as
// ghosts on a partitioned host), with TCP listeners at guest and management addresses and lock
// files on the datastore for what runs (runtime.go, hostctl.go); SOAP calls can be held and
// released (hold.go); -nfs makes the datastore an NFS export (nfs.go). /bmc/notify takes
// sushy-tools' fake Redfish driver's power notifications (bmc.go); with -nested-of it is the admin
// vCenter whose VMs are another test bed's hosts (nested.go).
//
// Files: main.go (flags, certificates, client mode), soap.go (the handler in front of vcsim),
// control.go (the control endpoint), hold.go, world.go, runtime.go, hostctl.go, nfs.go, bmc.go,
// nested.go.
//
// With -ctl URL -post PATH it is a client instead: one POST to a running test bed's control
// endpoint (for hooks), the answer on stdout, exit 0 on HTTP 2xx and 1 otherwise.
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
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
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
	guestPort := flag.Int("guest-port", 0, "TCP port each running VM with its guest network up listens on at its guest address (0: none)")
	mgmtPort := flag.Int("mgmt-port", 0, "TCP port each live host with its management network up listens on at its management address (0: none)")
	datastores := flag.Int("datastores", 1, "local datastores, each mounted by every host (the VMs are made on the first)")
	nfs := flag.Bool("nfs", false, "make the VMs' datastore an NFS export mounted by every host; CreateNasDatastore of it mounts it")
	ctlURL := flag.String("ctl", "", "client mode: the control endpoint (http://127.0.0.1:PORT) to send one request to")
	ctlPost := flag.String("post", "", "client mode: the path to POST (e.g. /host/revive?name=H)")
	ctlGet := flag.String("get", "", "client mode: the path to GET (e.g. /truth)")
	nestedOf := flag.String("nested-of", "", "admin test bed of nested hosts: the managed test bed's control endpoint (http://127.0.0.1:PORT)")
	nestedHosts := flag.String("nested-hosts", "", "with -nested-of: the managed hosts' names (H1,H2,...), one powered-on VM each")
	pack := flag.Int("pack", 0, "put this many VMs on the host whose name sorts first (an evacuation's source) before serving")
	certsDir := flag.String("make-certs", "", "no simulator: write ca.pem, cert.pem and key.pem (for 127.0.0.1, ::1, localhost) into DIR")
	flag.Parse()

	if *ctlURL != "" {
		os.Exit(clientMode(*ctlURL, *ctlPost, *ctlGet))
	}
	if *certsDir != "" {
		if err := writeCerts(*certsDir); err != nil {
			fatal("-make-certs: %v", err)
		}
		return
	}
	var nestedNames []string
	if *nestedOf != "" || *nestedHosts != "" {
		if *nestedOf == "" || *nestedHosts == "" {
			fatal("-nested-of and -nested-hosts go together")
		}
		names, err := parseNames(*nestedHosts)
		if err != nil {
			fatal("-nested-hosts: %v", err)
		}
		nestedNames = names
	}

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
	model.Datastore = *datastores
	if err := model.Create(); err != nil {
		fatal("creating the model: %v", err)
	}
	defer model.Remove()
	if *pack > 0 {
		if _, err := packVMs(*pack); err != nil {
			fatal("-pack: %v", err)
		}
	}
	if *nfs {
		nfsMode = true
		if err := exportDatastores(); err != nil {
			fatal("-nfs: %v", err)
		}
	}
	theWorld = newWorld(*guestPort, *mgmtPort)
	theWorld.reconcile()
	go theWorld.loop(200 * time.Millisecond)
	defer theWorld.shutdown()

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

	if nestedNames != nil {
		n, err := startNested(sdk, *nestedOf, nestedNames)
		if err != nil {
			fatal("-nested-of: %v", err)
		}
		theNested = n
		fmt.Printf("VCSIM_NESTED_OF=%s\n", n.of)
	}

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

// writeCerts writes a CA (ca.pem) and a server certificate it signed (cert.pem, key.pem) for
// 127.0.0.1, ::1 and localhost into dir (for other test servers, e.g. sushy-tools' HTTPS), and
// prints CERT_CA=, CERT_FILE=, CERT_KEY= and CERT_THUMBPRINT= (SHA-256 of the server certificate).
func writeCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cert, ca, err := makeCerts()
	if err != nil {
		return err
	}
	key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("unexpected key type %T", cert.PrivateKey)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":   ca,
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
	}
	for name, b := range files {
		mode := os.FileMode(0o644)
		if name == "key.pem" {
			mode = 0o600
		}
		if err := ioutil.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(cert.Certificate[0])
	fmt.Printf("CERT_CA=%s\nCERT_FILE=%s\nCERT_KEY=%s\nCERT_THUMBPRINT=%s\n", filepath.Join(dir, "ca.pem"),
		filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), colonHex(sum[:]))
	return nil
}

// clientMode sends one request to a running test bed's control endpoint (for hooks), prints the
// answer and returns the exit status: 0 for HTTP 2xx, else 1.
func clientMode(base, post, get string) int {
	method, path := http.MethodPost, post
	if post == "" {
		method, path = http.MethodGet, get
	}
	if path == "" {
		fmt.Fprintln(os.Stderr, "am-vcsim: -ctl needs -post PATH or -get PATH")
		return 1
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "am-vcsim: %v\n", err)
		return 1
	}
	client := &http.Client{Timeout: 60 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "am-vcsim: %v\n", err)
		return 1
	}
	defer res.Body.Close()
	body, _ := ioutil.ReadAll(res.Body)
	_, _ = os.Stdout.Write(body)
	if res.StatusCode/100 != 2 {
		fmt.Fprintf(os.Stderr, "am-vcsim: %s %s: %s\n", method, path, res.Status)
		return 1
	}
	return 0
}
