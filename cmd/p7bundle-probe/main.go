// Command p7bundle-probe is the site probe p7bundle carries in every
// bundle (internal/probeimage embeds it). doctor runs it in the cluster:
//
//	p7bundle-probe idle                      pull check: run until stopped
//	p7bundle-probe check [--postgres KEY=HOST:PORT] [--smtp KEY=HOST:PORT[+tls]] [--share KEY=DIR]...
//	p7bundle-probe check --root --share KEY=DIR...  (as root: is root squashed on each share?)
//
// check prints one JSON result per line (internal/probe) and exits 0;
// a usage error exits 2.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/p7bundle/p7bundle/internal/probe"
)

func main() {
	if len(os.Args) < 2 {
		usage("missing mode")
	}
	switch os.Args[1] {
	case "idle":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		<-stop
	case "check":
		check(os.Args[2:])
	default:
		usage("unknown mode " + os.Args[1])
	}
}

func check(args []string) {
	var results []probe.Result
	var shares []probe.Share
	root := false
	for i := 0; i < len(args); i++ {
		flag := args[i]
		if flag == "--root" {
			root = true
			continue
		}
		if i+1 >= len(args) {
			usage(flag + " needs KEY=VALUE")
		}
		i++
		key, value, ok := strings.Cut(args[i], "=")
		if !ok || key == "" || value == "" {
			usage(flag + " needs KEY=VALUE, got " + args[i])
		}
		switch flag {
		case "--postgres":
			results = append(results, probe.Postgres(key, value))
		case "--smtp":
			addr, tls := strings.CutSuffix(value, "+tls")
			results = append(results, probe.SMTP(key, addr, tls))
		case "--share":
			shares = append(shares, probe.Share{Key: key, Mount: value})
		default:
			usage("unknown flag " + flag)
		}
	}
	if root {
		results = append(results, probe.RootSquash(shares)...)
	} else {
		results = append(results, probe.Shares(shares)...)
	}
	for _, r := range results {
		probe.Emit(os.Stdout, r)
	}
}

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "p7bundle-probe: %s\nusage: p7bundle-probe idle | check [--root] [--postgres KEY=HOST:PORT] [--smtp KEY=HOST:PORT[+tls]] [--share KEY=DIR]...\n", msg)
	os.Exit(2)
}
