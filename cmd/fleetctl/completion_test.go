package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// completionScript writes `fleetctl completion SHELL` to a file.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	code, out, errOut := runFleetctl(t, "completion", shell)
	require.Equal(t, 0, code, errOut)
	p := filepath.Join(t.TempDir(), "fleetctl."+shell)
	require.NoError(t, os.WriteFile(p, []byte(out), 0o644))
	return p
}

// stubFleetctl puts a `fleetctl` on PATH that answers `robots --ids` with
// two robots and records its arguments in the returned file, so the
// scripts' robot completion is checked without a broker (robots --ids
// itself is tested against one in TestRobots).
func stubFleetctl(t *testing.T) (argsFile string) {
	t.Helper()
	binDir := t.TempDir()
	argsFile = filepath.Join(binDir, "args")
	script := "#!/bin/sh\necho \"$@\" > " + argsFile + "\nprintf 'r-1\\nr-22\\n'\n"
	require.NoError(t, os.WriteFile(filepath.Join(binDir, "fleetctl"), []byte(script), 0o755))
	t.Setenv("PATH", binDir+":"+os.Getenv("PATH"))
	return argsFile
}

func readArgs(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// shellOut runs a shell script and returns its output, failing (not
// skipping) when the shell is missing: `make test-deps` installs it.
func shellOut(t *testing.T, shell string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(shell)
	require.NoError(t, err, "%s not found: run `make test-deps`", shell)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %q:\n%s", shell, args, out)
	return string(out)
}

func fields(s string) []string {
	f := strings.Fields(s)
	sort.Strings(f)
	return f
}

// TestCompletionBash drives the generated function as bash's completion
// would, through COMP_WORDS and COMP_CWORD.
func TestCompletionBash(t *testing.T) {
	script := completionScript(t, "bash")
	complete := func(line string) []string {
		t.Helper()
		words := strings.Split(line, " ")
		var q []string
		for _, w := range words {
			q = append(q, "'"+w+"'")
		}
		out := shellOut(t, "bash", "-c", "source "+script+"\nCOMP_WORDS=("+strings.Join(q, " ")+")\nCOMP_CWORD="+
			strconv.Itoa(len(words)-1)+"\n_fleetctl\necho \"${COMPREPLY[@]}\"")
		return fields(out)
	}
	require.Equal(t, []string{"send", "session", "sessions"}, complete("fleetctl se"))
	require.Equal(t, []string{"cancel", "follow", "start"}, complete("fleetctl session "))
	require.Contains(t, complete("fleetctl session start r-1 --"), "--follow")
	require.Contains(t, complete("fleetctl session start r-1 --"), "--param")
	require.Equal(t, []string{"--tls-ca-file", "--tls-cert-file", "--tls-insecure-skip-verify", "--tls-key-file", "--tls-server-name"}, complete("fleetctl robots --tls"))
	require.Equal(t, []string{"--json"}, complete("fleetctl ping --js"))
	require.Equal(t, []string{"bash", "fish", "zsh"}, complete("fleetctl completion "))
	require.Equal(t, []string{"session.cancelled", "session.completed", "session.failed", "session.progress", "session.queued", "session.started", "session.state"}, complete("fleetctl schema sess"))
	require.Empty(t, complete("fleetctl ping --broker "), "a flag's value is not a flag")

	// Robot ids for the first argument, with the line's broker options.
	args := stubFleetctl(t)
	require.Equal(t, []string{"r-1", "r-22"}, complete("fleetctl ping r"))
	require.Equal(t, "robots --ids --wait 2s --quiet 300ms", readArgs(t, args))
	require.Equal(t, []string{"r-22"}, complete("fleetctl session start --broker tcp://b:1 --follow --prefix=acme --json r-2"))
	require.Equal(t, "robots --ids --wait 2s --quiet 300ms --broker tcp://b:1 --prefix=acme", readArgs(t, args))
	require.Empty(t, complete("fleetctl session cancel r-1 "), "the second argument is a session, not a robot")
	require.Empty(t, complete("fleetctl token r"), "token takes no robot")
}

// TestCompletionFish asks real fish for completions with `complete -C`.
func TestCompletionFish(t *testing.T) {
	script := completionScript(t, "fish")
	complete := func(line string) []string {
		t.Helper()
		out := shellOut(t, "fish", "--no-config", "-c", "source "+script+"; complete -C '"+line+"'")
		var words []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			w, _, _ := strings.Cut(l, "\t")
			words = append(words, w)
		}
		sort.Strings(words)
		return words
	}
	require.Equal(t, []string{"send", "session", "sessions"}, complete("fleetctl se"))
	require.Equal(t, []string{"cancel", "follow", "start"}, complete("fleetctl session "))
	require.Contains(t, complete("fleetctl session start r-1 --f"), "--follow")
	require.Contains(t, complete("fleetctl robots --j"), "--json")
	require.Equal(t, []string{"bash", "fish", "zsh"}, complete("fleetctl completion "))

	args := stubFleetctl(t)
	require.Equal(t, []string{"r-1", "r-22"}, complete("fleetctl ping --broker tcp://b:1 r"))
	require.Equal(t, "robots --ids --wait 2s --quiet 300ms --broker tcp://b:1", readArgs(t, args))
}

// TestCompletionZsh loads the script into zsh with the completion system's
// functions stubbed to print what they are offered.
func TestCompletionZsh(t *testing.T) {
	script := completionScript(t, "zsh")
	shellOut(t, "zsh", "-n", script)
	complete := func(words ...string) []string {
		t.Helper()
		var q []string
		for _, w := range words {
			q = append(q, "'"+w+"'")
		}
		out := shellOut(t, "zsh", "-f", "-c", `
compdef() { :; }
_describe() { local -a a; a=("${(@P)2}"); for x in $a; do print -r -- "${x%%:*}"; done; }
compadd() { shift; local -a a; a=("${(@P)1}"); print -rl -- $a; }
_files() { print -r -- FILES; }
source `+script+`
words=(`+strings.Join(q, " ")+`)
CURRENT=${#words}
_fleetctl`)
		var res []string
		for _, w := range fields(out) {
			if strings.HasPrefix(w, words[len(words)-1]) || w == "FILES" {
				res = append(res, w)
			}
		}
		return res
	}
	require.Equal(t, []string{"send", "session", "sessions"}, complete("fleetctl", "se"))
	require.Equal(t, []string{"cancel", "follow", "start"}, complete("fleetctl", "session", ""))
	require.Contains(t, complete("fleetctl", "session", "start", "--"), "--follow")
	require.Equal(t, []string{"FILES"}, complete("fleetctl", "robots", "--config", ""))
	require.Equal(t, []string{"bash", "fish", "zsh"}, complete("fleetctl", "completion", ""))

	args := stubFleetctl(t)
	require.Equal(t, []string{"r-1", "r-22"}, complete("fleetctl", "doctor", "--config", "/x.yaml", "r"))
	require.Equal(t, "robots --ids --wait 2s --quiet 300ms --config /x.yaml", readArgs(t, args))
	require.Empty(t, complete("fleetctl", "session", "follow", "r-1", "r"), "the second argument is a session")
}

// TestEveryCommandTakesJSON: --json is on every command, and its help
// lists each command.
func TestEveryCommandTakesJSON(t *testing.T) {
	m := completionModel()
	require.Len(t, m.Commands, len(commands))
	for _, c := range m.Commands {
		var names []string
		for _, f := range c.Flags {
			names = append(names, f.Name)
		}
		require.Contains(t, names, "json", c.Name)
		code, _, errOut := runFleetctl(t, append(strings.Split(c.Name, " "), "--help")...)
		require.Equal(t, 0, code)
		require.Contains(t, errOut, "Usage: fleetctl "+c.Name+" [flags]")
	}
	code, out, _ := runFleetctl(t, "help")
	require.Equal(t, 0, code)
	for _, n := range commandNames() {
		require.Contains(t, out, "  "+n+" ")
	}
	code, _, errOut := runFleetctl(t, "session")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "fleetctl session: want a subcommand: cancel, follow, start")
}
