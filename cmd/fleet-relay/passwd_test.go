package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/broker"
)

// TestPasswd: `fleet-relay passwd` prints a salted hash, or adds and
// replaces lines of a Mosquitto password file that the embedded broker reads.
func TestPasswd(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, passwdCmd([]string{"--format", "bcrypt", "--cost", "4", "r-1"}, strings.NewReader("s3cret\n"), &out, &errb), errb.String())
	hash := strings.TrimSpace(out.String())
	require.True(t, strings.HasPrefix(hash, "$2a$04$"), hash)
	require.NoError(t, broker.CheckPasswordFormat(hash))

	file := filepath.Join(t.TempDir(), "passwd")
	require.NoError(t, os.WriteFile(file, []byte("# robots\nr-0:$7$101$YWJj$ZGVm\n"), 0o600))
	for _, pw := range []string{"first", "second"} {
		out.Reset()
		require.Equal(t, 0, passwdCmd([]string{"--file", file, "r-1"}, strings.NewReader(pw+"\n"), &out, &errb), errb.String())
		require.Empty(t, out.String())
	}
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 3, "the comment, r-0 kept, r-1 replaced: %q", b)
	require.Equal(t, "r-0:$7$101$YWJj$ZGVm", lines[1])
	require.True(t, strings.HasPrefix(lines[2], "r-1:$7$20000$"), lines[2])
	st, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	users, err := broker.ReadPasswordFile(bytes.NewReader(b))
	require.NoError(t, err)
	bk, err := broker.New(broker.Options{Listen: "127.0.0.1:0", Users: users})
	require.NoError(t, err)
	bk.Close()

	require.Equal(t, 1, passwdCmd([]string{"r-1"}, strings.NewReader("\n"), &out, &errb), "empty password")
	require.Equal(t, 2, passwdCmd([]string{}, strings.NewReader("x\n"), &out, &errb), "no username")
	require.Equal(t, 1, passwdCmd([]string{"--format", "md5", "r-1"}, strings.NewReader("x\n"), &out, &errb))
	require.Contains(t, errb.String(), `unknown password format "md5"`)
}
