package main

// What the liveness model makes real: TCP listeners at guest and management addresses, and the
// lock files of running VMs on their datastore.

import (
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// listener accepts connections (and drops whatever they send) until closed; closing it also
// closes the connections it accepted, so a dead guest or host refuses and resets.
type listener struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	shut  bool
}

func openListener(addr string) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &listener{ln: ln, conns: map[net.Conn]struct{}{}}
	go l.serve()
	return l, nil
}

func (l *listener) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.shut {
			l.mu.Unlock()
			_ = c.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		go func() {
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			_, _ = io.Copy(ioutil.Discard, c)
			_ = c.Close()
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
		}()
	}
}

func (l *listener) close() {
	l.mu.Lock()
	l.shut = true
	for c := range l.conns {
		_ = c.Close()
	}
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	_ = l.ln.Close()
}

// syncListeners opens a guest listener for every running VM whose guest network and host's
// guest network are up, and a management listener for every live host with its management
// network up; it closes the others.
func (w *world) syncListeners(inst []instance) {
	want := map[string]bool{}
	if w.guestPort > 0 {
		for _, i := range inst {
			hm := w.hosts[i.host]
			if w.guestDown[i.key] || (hm != nil && !hm.guestsUp) {
				continue
			}
			if ip := w.vmIPs[i.key]; ip != "" {
				want[net.JoinHostPort(ip, strconv.Itoa(w.guestPort))] = true
			}
		}
	}
	if w.mgmtPort > 0 {
		for _, hm := range w.hosts {
			if hm.alive && hm.mgmtUp && hm.mgmtIP != "" {
				want[net.JoinHostPort(hm.mgmtIP, strconv.Itoa(w.mgmtPort))] = true
			}
		}
	}
	for a, l := range w.listeners {
		if !want[a] {
			l.close()
			delete(w.listeners, a)
		}
	}
	for a := range w.listenErr {
		if !want[a] {
			delete(w.listenErr, a)
		}
	}
	for a := range want {
		if _, ok := w.listeners[a]; ok {
			continue
		}
		l, err := openListener(a)
		if err != nil {
			if w.listenErr[a] != err.Error() {
				fmt.Fprintf(os.Stderr, "am-vcsim: listen %s: %v\n", a, err)
			}
			w.listenErr[a] = err.Error()
			continue
		}
		delete(w.listenErr, a)
		w.listeners[a] = l
	}
}

// lockFile is a running VM's lock, touched every second like ESXi's lock heartbeat on NFS.
type lockFile struct {
	path    string
	holders string
	touched time.Time
}

func (w *world) syncLocks(inst []instance) {
	holders := map[string][]string{}
	for _, i := range inst {
		holders[i.key] = append(holders[i.key], w.hostName(i.host))
	}
	for key, l := range w.locks {
		if _, ok := holders[key]; !ok {
			_ = os.Remove(l.path)
			delete(w.locks, key)
		}
	}
	for key := range w.lockErr {
		if _, ok := holders[key]; !ok {
			delete(w.lockErr, key)
		}
	}
	now := time.Now()
	for key, hs := range holders {
		sort.Strings(hs)
		who := strings.Join(hs, ",")
		l := w.locks[key]
		if l == nil {
			p, err := w.lockPath(key)
			if err != nil {
				w.lockErr[key] = err.Error()
				continue
			}
			l = &lockFile{path: p}
		}
		write := l.holders != who
		if !write && now.Sub(l.touched) >= 900*time.Millisecond {
			if err := os.Chtimes(l.path, now, now); err != nil {
				write = true // removed meanwhile: make it again
			} else {
				l.touched = now
			}
		}
		if write {
			content := fmt.Sprintf("am-vcsim lock\nfile=%s\nhosts=%s\nsince=%s\n", key, who, now.UTC().Format(time.RFC3339Nano))
			if _, err := os.Stat(filepath.Dir(l.path)); err != nil {
				w.lockErr[key] = fmt.Sprintf("VM directory: %v", err)
				continue
			}
			if err := ioutil.WriteFile(l.path, []byte(content), 0o600); err != nil {
				w.lockErr[key] = err.Error()
				continue
			}
			l.holders, l.touched = who, now
		}
		delete(w.lockErr, key)
		w.locks[key] = l
	}
}

// touchLocks refreshes the lock files that are due (between reconciles); one that is gone makes
// the next reconcile write it again.
func (w *world) touchLocks() {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for _, l := range w.locks {
		if now.Sub(l.touched) < 900*time.Millisecond {
			continue
		}
		if err := os.Chtimes(l.path, now, now); err != nil {
			l.holders = "" // rewrite
			atomic.StoreInt32(&w.watch.dirty, 1)
			continue
		}
		l.touched = now
	}
}
