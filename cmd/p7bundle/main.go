// Command p7bundle builds signed air-gap bundles of pSeven Enterprise and
// verifies them. Flags become option structs here; the work is elsewhere.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/internal/safetext"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Text from manifests, charts and registries reaches stdout: no
	// control character of it steers the terminal.
	safe := safetext.NewWriter(stdout)
	defer safe.Flush()
	out, raw := &countingWriter{w: safe}, &countingWriter{w: stdout}
	app := newApp(&environment{stdin: stdin, stdout: out, raw: raw, stderr: stderr})
	ordered, err := interspersed(app, args)
	if err == nil {
		err = app.RunContext(ctx, ordered)
	}
	if err == nil {
		return 0
	}
	code := exitCode(err)
	fmt.Fprintf(stderr, "p7bundle: %s\n", oneLine(err))
	// A script asking for JSON gets JSON on failure too, unless the
	// command printed its own report.
	if wantsJSON(args) && out.n+raw.n == 0 {
		var rep errorReport
		rep.Error.Code, rep.Error.Kind, rep.Error.Message = code, exitKinds[code], oneLine(err)
		printJSON(out, rep)
	}
	return code
}

// countingWriter counts what a command wrote.
type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// wantsJSON says whether --json is among the flags (before "--").
func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--json" || a == "-json" || a == "--json=true" {
			return true
		}
	}
	return false
}

func newApp(env *environment) *cli.App {
	stdin, stdout, stderr := env.stdin, env.stdout, env.stderr
	onUsageError := func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	app := &cli.App{
		Name:      "p7bundle",
		Usage:     "carry pSeven Enterprise into an air-gapped site as one signed bundle",
		Writer:    stdout,
		ErrWriter: stderr,
		Reader:    stdin,
		// Errors are printed once, by run, with their exit code.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		// Reached without a command, or with one that does not exist.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unknown command %q (p7bundle --help lists them)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		InvalidFlagAccessHandler: func(_ *cli.Context, name string) {
			panic("p7bundle: undefined flag " + name)
		},
		Commands: []*cli.Command{
			buildCommand(env),
			verifyCommand(env),
			approveCommand(env),
			inspectCommand(env),
			diffCommand(env),
			joinCommand(env),
			installCommand(env),
			doctorCommand(env),
			pushCommand(env),
			serveCommand(env),
			exportCommand(env),
			valuesCommand(env),
			lintCommand(env),
			restoreValuesCommand(env),
			supportCommand(env),
			keygenCommand(env),
			publicKeyCommand(env),
			versionCommand(env),
			completionCommand(env),
		},
		// The completion scripts ask the binary: `p7bundle verify --generate-bash-completion`.
		EnableBashCompletion: true,
	}
	// A flag that does not parse (--jobs abc, a value flag with no value)
	// is a usage error in every command, not only at the top.
	for _, c := range app.Commands {
		c.OnUsageError = onUsageError
		c.Before = refuseStdoutOutput
		c.UsageText = usageTexts[c.Name]
	}
	return app
}

// refuseStdoutOutput: every -o writes a file that is binary or holds
// secrets (bundles, values, archives); "-" is not stdout for them.
func refuseStdoutOutput(c *cli.Context) error {
	if c.Command.Name != "public-key" && hasFlag(c, "output") && c.String("output") == "-" {
		return usagef("%s -o -: it writes a file (binary, or holding secrets), not stdout", c.Command.Name)
	}
	return nil
}

// environment is the process's standard streams, injected for tests.
// stdout escapes control characters; raw is stdout as it is, for output
// that must be byte-exact (a manifest export).
type environment struct {
	stdin               io.Reader
	stdout, raw, stderr io.Writer
}

// usageError marks wrong flags or arguments (exit 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// oneLine keeps the error to a single line for the terminal, its control
// characters escaped.
func oneLine(err error) string {
	return safetext.String(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(err.Error()))
}

// isUsage reports flag-parsing errors urfave/cli returns without OnUsageError.
func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// interspersed moves a subcommand's positional arguments after its flags,
// so `verify BUNDLE --key K` works: urfave/cli v2 stops parsing flags at
// the first positional argument. A value flag given last with no value is
// a usage error (moved, it would take "--" as its value).
func interspersed(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 || args[len(args)-1] == "--generate-bash-completion" {
		return args, nil
	}
	var cmd *cli.Command
	for _, c := range app.Commands {
		if c.HasName(args[1]) {
			cmd = c
		}
	}
	if cmd == nil {
		return args, nil
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	flags, positional := []string{}, []string{}
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] {
				if i+1 == len(rest) {
					return nil, usagef("flag %s needs a value", a)
				}
				i++
				flags = append(flags, rest[i])
			}
			continue
		}
		positional = append(positional, a)
	}
	out := append([]string{args[0], args[1]}, flags...)
	if len(positional) > 0 {
		out = append(append(out, "--"), positional...)
	}
	return out, nil
}
