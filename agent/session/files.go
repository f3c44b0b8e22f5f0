package session

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/robotfleet/fleetlink/protocol"
)

// maxArtifacts bounds result.artifacts; the rest are counted in the
// artifacts_omitted metric.
const maxArtifacts = 256

// cappedLog is a session's log file, cut at max bytes with a note saying so.
// Writes never fail: a full or broken log must not fail the run.
type cappedLog struct {
	mu  sync.Mutex // guards f, n, cut
	f   *os.File
	n   int64
	max int64
	cut bool
}

func openLog(path string, max int64) (*cappedLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open session log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open session log: %w", err)
	}
	return &cappedLog{f: f, n: st.Size(), max: max}, nil
}

func (l *cappedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut || l.f == nil {
		return len(p), nil
	}
	room := l.max - l.n
	if int64(len(p)) <= room {
		n, _ := l.f.Write(p)
		l.n += int64(n)
		return len(p), nil
	}
	if room > 0 {
		_, _ = l.f.Write(p[:room])
	}
	_, _ = fmt.Fprintf(l.f, "\n[session log truncated at %d bytes]\n", l.max)
	l.n = l.max
	l.cut = true
	return len(p), nil
}

func (l *cappedLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// dirSize returns the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// artifacts lists the regular files under dir with size and sha256, at most
// maxArtifacts; omitted counts the rest.
func artifacts(dir string) (arts []protocol.Artifact, omitted int, err error) {
	arts = []protocol.Artifact{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if len(arts) >= maxArtifacts {
			omitted++
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		a, err := hashFile(p)
		if err != nil {
			return err
		}
		a.Path = filepath.ToSlash(rel)
		arts = append(arts, a)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list artifacts: %w", err)
	}
	return arts, omitted, nil
}

func hashFile(p string) (protocol.Artifact, error) {
	f, err := os.Open(p)
	if err != nil {
		return protocol.Artifact{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return protocol.Artifact{}, err
	}
	return protocol.Artifact{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
