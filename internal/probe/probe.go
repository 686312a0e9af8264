// Package probe holds the checks the site probe runs inside the cluster
// and the line protocol it reports them in. The probe program
// (cmd/p7bundle-probe) runs them; doctor reads its output. It uses the
// standard library only: the probe must stay tiny and static.
package probe

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Statuses of a check, as doctor prints them.
const (
	Pass = "PASS"
	Warn = "WARN"
	Fail = "FAIL"
)

// UID is the user pSeven Enterprise accesses its NFS shares as (the guide:
// the share's owner, with full access).
const UID = 11111

// Result is one check, one JSON line on the probe's stdout.
type Result struct {
	Check  string `json:"check"`
	Key    string `json:"key,omitempty"` // the values key the check is about
	Status string `json:"status"`
	Detail string `json:"detail"`
	// Guide is the deployment guide's figure or rule beside the result.
	Guide string `json:"guide,omitempty"`
}

// Emit writes r as one line.
func Emit(w io.Writer, r Result) {
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n", b)
}

// Parse reads the results among other lines (kubelet may prefix nothing,
// but a crashing probe prints a panic): lines that are not results are skipped.
func Parse(r io.Reader) []Result {
	var out []Result
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var res Result
		if json.Unmarshal(sc.Bytes(), &res) == nil && res.Check != "" && res.Status != "" {
			out = append(out, res)
		}
	}
	return out
}

// Timeout bounds every network check.
const Timeout = 5 * time.Second

// Postgres checks that addr speaks the PostgreSQL protocol: it sends an
// SSLRequest, which every PostgreSQL server and PgBouncer answers with one
// byte, 'S' or 'N', before any authentication.
func Postgres(key, addr string) Result {
	r := Result{Check: "postgres", Key: key, Guide: "PostgreSQL 12+ (through PgBouncer) reachable from the cluster"}
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return failed(r, "%s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(Timeout))
	req := make([]byte, 8)
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], 80877103) // SSLRequest code
	if _, err := conn.Write(req); err != nil {
		return failed(r, "%s: %v", addr, err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil {
		return failed(r, "%s accepts TCP but did not answer as PostgreSQL: %v", addr, err)
	}
	switch b[0] {
	case 'S':
		r.Status, r.Detail = Pass, addr+" answers as PostgreSQL (TLS offered)"
	case 'N':
		r.Status, r.Detail = Pass, addr+" answers as PostgreSQL (no TLS)"
	default:
		return failed(r, "%s answered %q to a PostgreSQL SSLRequest: not PostgreSQL", addr, b[0])
	}
	return r
}

// SMTP checks that addr greets with 220. implicitTLS is SMTPS (port 465):
// the greeting comes after the TLS handshake, whose certificate is not
// judged here (pSeven's own settings decide that).
func SMTP(key, addr string, implicitTLS bool) Result {
	r := Result{Check: "smtp", Key: key, Guide: "optional; without it no password reset links or notifications"}
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return failed(r, "%s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(Timeout))
	var rw net.Conn = conn
	if implicitTLS {
		host, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true}) // reachability only
		if err := tc.Handshake(); err != nil {
			return failed(r, "%s: TLS handshake (SMTPS): %v", addr, err)
		}
		rw = tc
	}
	line, err := bufio.NewReader(rw).ReadString('\n')
	if err != nil {
		return failed(r, "%s accepts TCP but sent no SMTP greeting: %v", addr, err)
	}
	if !strings.HasPrefix(line, "220") {
		return failed(r, "%s greeted %q, not an SMTP 220", addr, strings.TrimSpace(line))
	}
	r.Status, r.Detail = Pass, addr+" greets as SMTP: "+strings.TrimSpace(line)
	return r
}

// Share is an NFS share as mounted in the probe's pod.
type Share struct {
	Key   string // values key of its path, e.g. storage.nfs.dataPath
	Mount string // where it is mounted
}

// Shares checks every mounted share as the guide asks: writable by the
// running user (UID 11111), owned by it, flock() enforced, and each share
// a directory of its own.
func Shares(shares []Share) []Result {
	var out []Result
	markers := map[string]string{}
	for _, s := range shares {
		res, marker := share(s)
		out = append(out, res...)
		if marker != "" {
			markers[s.Key] = marker
		}
	}
	// Two keys naming one directory: the guide wants three separate shares.
	for _, a := range shares {
		for _, b := range shares {
			if a.Key >= b.Key || markers[a.Key] == "" || markers[b.Key] == "" {
				continue
			}
			if _, err := os.Stat(filepath.Join(b.Mount, filepath.Base(markers[a.Key]))); err == nil {
				out = append(out, Result{Check: "nfs-layout", Key: b.Key, Status: Fail,
					Detail: fmt.Sprintf("%s and %s are the same directory", a.Key, b.Key), Guide: "each data storage is a separate NFS share"})
			}
		}
	}
	for _, m := range markers {
		os.Remove(m)
	}
	return out
}

func share(s Share) ([]Result, string) {
	guide := "exported rw,no_root_squash; owned by UID 11111 with full access"
	fi, err := os.Stat(s.Mount)
	if err != nil || !fi.IsDir() {
		return []Result{{Check: "nfs-write", Key: s.Key, Status: Fail, Detail: fmt.Sprintf("not mounted at %s: %v", s.Mount, err), Guide: guide}}, ""
	}
	var out []Result
	if owner, ok := fileUID(fi); ok && owner != UID {
		out = append(out, Result{Check: "nfs-owner", Key: s.Key, Status: Warn,
			Detail: fmt.Sprintf("owned by UID %d, mode %v", owner, fi.Mode().Perm()), Guide: "chown 11111 on the NFS server"})
	} else if ok {
		out = append(out, Result{Check: "nfs-owner", Key: s.Key, Status: Pass, Detail: "owned by UID 11111", Guide: "owned by UID 11111"})
	}
	name := filepath.Join(s.Mount, ".p7bundle-doctor-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return append(out, Result{Check: "nfs-write", Key: s.Key, Status: Fail, Detail: fmt.Sprintf("not writable as UID %d: %v", os.Getuid(), unwrapPath(err)), Guide: guide}), ""
	}
	defer f.Close()
	_, err = f.WriteString("p7bundle doctor\n")
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		os.Remove(name)
		return append(out, Result{Check: "nfs-write", Key: s.Key, Status: Fail, Detail: fmt.Sprintf("write as UID %d: %v", os.Getuid(), unwrapPath(err)), Guide: guide}), ""
	}
	out = append(out, Result{Check: "nfs-write", Key: s.Key, Status: Pass, Detail: fmt.Sprintf("writable as UID %d", os.Getuid()), Guide: guide})
	out = append(out, flock(s.Key, f, name))
	return out, name
}

// RootSquash checks, run as root, that each share keeps root as root
// (exported with no_root_squash, as the guide requires): a file root
// creates there must be owned by UID 0.
func RootSquash(shares []Share) []Result {
	var out []Result
	for _, s := range shares {
		name := filepath.Join(s.Mount, ".p7bundle-doctor-root-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		uid := -1
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			if fi, serr := f.Stat(); serr == nil {
				if owner, ok := fileUID(fi); ok {
					uid = int(owner)
				}
			}
			f.Close()
			os.Remove(name)
		}
		out = append(out, rootResult(s.Key, os.Getuid(), uid, err))
	}
	return out
}

// rootResult judges what root saw: running as euid, it created a file
// owned by uid (-1: unknown), or failed with err.
func rootResult(key string, euid, uid int, err error) Result {
	r := Result{Check: "nfs-root", Key: key, Guide: "exported with no_root_squash"}
	switch {
	case euid != 0:
		r.Status, r.Detail = Warn, fmt.Sprintf("not checked: the check ran as UID %d, not root", euid)
	case errors.Is(err, os.ErrPermission):
		r.Status, r.Detail = Fail, fmt.Sprintf("root cannot create a file (%v): the export squashes root; export it with no_root_squash", unwrapPath(err))
	case err != nil:
		r.Status, r.Detail = Fail, fmt.Sprintf("root cannot create a file: %v", unwrapPath(err))
	case uid == 0:
		r.Status, r.Detail = Pass, "a file root creates is owned by root: no_root_squash"
	default:
		r.Status, r.Detail = Fail, fmt.Sprintf("a file root creates is owned by UID %d: the export squashes root; export it with no_root_squash", uid)
	}
	return r
}

// flock takes an exclusive lock, and checks a second open file cannot:
// a lock that is not enforced is as bad as none.
func flock(key string, f *os.File, name string) Result {
	r := Result{Check: "nfs-flock", Key: key, Guide: "file locks (flock) supported"}
	if err := lockExclusive(f); err != nil {
		return failed(r, "flock: %v", err)
	}
	defer unlock(f)
	g, err := os.Open(name)
	if err != nil {
		return failed(r, "reopen: %v", unwrapPath(err))
	}
	defer g.Close()
	err = lockExclusive(g)
	if err == nil {
		unlock(g)
		return failed(r, "a second exclusive flock succeeded: locks are not enforced")
	}
	if !errors.Is(err, errWouldBlock) {
		return failed(r, "flock: %v", err)
	}
	r.Status, r.Detail = Pass, "exclusive flock taken and enforced"
	return r
}

func failed(r Result, format string, args ...any) Result {
	r.Status, r.Detail = Fail, fmt.Sprintf(format, args...)
	return r
}

// unwrapPath drops the path from a PathError: the key already names it.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
