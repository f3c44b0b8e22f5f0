package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/robotfleet/fleetlink/cloud/broker"
)

const passwdUsage = `usage: fleet-relay passwd [--format pbkdf2|bcrypt] [--cost N] [--file FILE] USERNAME

Reads a password from standard input (one line; not echoed on a terminal)
and prints its salted hash for embedded_mqtt.users[].password, or with
--file adds or replaces USERNAME's line in a Mosquitto password file (which
embedded_mqtt.password_file and Mosquitto's password_file both read).
Formats: pbkdf2 (default; mosquitto_passwd's $7$ PBKDF2-SHA512, readable by
Mosquitto too), bcrypt. --cost is the PBKDF2 iterations (default 20000) or
the bcrypt cost (default 10).
`

// passwdCmd is `fleet-relay passwd`.
func passwdCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, passwdUsage) }
	format := fs.String("format", broker.FormatPBKDF2, "pbkdf2 or bcrypt")
	cost := fs.Int("cost", 0, "PBKDF2 iterations or bcrypt cost (0 = default)")
	file := fs.String("file", "", "Mosquitto password file to update")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" || strings.ContainsAny(fs.Arg(0), ":\n") {
		fmt.Fprint(stderr, passwdUsage)
		return 2
	}
	user := fs.Arg(0)
	pass, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "fleet-relay passwd: %v\n", err)
		return 1
	}
	hash, err := broker.HashPassword(pass, *format, *cost)
	if err != nil {
		fmt.Fprintf(stderr, "fleet-relay passwd: %v\n", err)
		return 1
	}
	if *file == "" {
		fmt.Fprintln(stdout, hash)
		return 0
	}
	if err := setPasswordLine(*file, user, hash); err != nil {
		fmt.Fprintf(stderr, "fleet-relay passwd: %v\n", err)
		return 1
	}
	return 0
}

// readPassword reads one line. On a terminal it prompts and turns echo off
// with stty (no dependency for one prompt).
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(stderr, "Password: ")
			if stty(f, "-echo") == nil {
				defer func() { _ = stty(f, "echo"); fmt.Fprintln(stderr) }()
			}
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty password (give it on standard input)")
	}
	return line, nil
}

func stty(tty *os.File, arg string) error {
	cmd := exec.Command("stty", arg)
	cmd.Stdin = tty
	return cmd.Run()
}

// setPasswordLine replaces user's line in a password file, or appends one,
// writing a new file (mode 0600) and renaming it over the old one.
func setPasswordLine(path, user, hash string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var out []string
	replaced := false
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && name == user {
			line, replaced = user+":"+hash, true
		}
		if line != "" || len(out) > 0 {
			out = append(out, line)
		}
	}
	if !replaced {
		out = append(out, user+":"+hash)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".passwd-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strings.Join(out, "\n") + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
