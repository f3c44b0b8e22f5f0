package session

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxModels bounds the model list robot.status carries.
const maxModels = 500

// maxModelDepth bounds how deep Models looks into a model directory.
const maxModelDepth = 4

// checkModelName enforces the rules a model name must follow before it
// touches the file system: relative, no "..", no empty or odd elements.
func checkModelName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: model is empty", ErrInvalidModel)
	case len(name) > 1024:
		return fmt.Errorf("%w: model name is longer than 1024 bytes", ErrInvalidModel)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: model %q contains NUL", ErrInvalidModel, name)
	case filepath.IsAbs(name) || strings.HasPrefix(name, "/"):
		return fmt.Errorf("%w: model %q must be relative to a model directory, not absolute", ErrInvalidModel, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return fmt.Errorf("%w: model %q must not contain \"..\"", ErrInvalidModel, name)
		}
	}
	return nil
}

// resolveModel returns the absolute, symlink-free path of the model name in
// the first model directory that holds it. The path must stay inside that
// directory after resolving symlinks and be a regular file.
func resolveModel(dirs []string, name string) (string, error) {
	if err := checkModelName(name); err != nil {
		return "", err
	}
	var firstErr error
	for _, dir := range dirs {
		root, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue // a missing model dir holds no models
		}
		root, err = filepath.Abs(root)
		if err != nil {
			continue
		}
		p, err := filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			continue
		}
		if !within(root, p) {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: model %q resolves outside its model directory %q (symlink escape)", ErrInvalidModel, name, dir)
			}
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if !st.Mode().IsRegular() {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: model %q is not a regular file", ErrInvalidModel, name)
			}
			continue
		}
		return p, nil
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("%w: model %q is not in any model directory (%s)", ErrInvalidModel, name, strings.Join(dirs, ", "))
}

// within reports whether p is root or below it. Both are clean absolute paths.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// listModels returns the regular files (and symlinks that resolve inside
// their directory) of the model dirs, relative and sorted, at most
// maxModels, skipping hidden entries.
func listModels(dirs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, dir := range dirs {
		root, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue
		}
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || len(out) >= maxModels {
				return filepath.SkipDir
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." {
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if strings.Count(rel, string(filepath.Separator)) >= maxModelDepth-1 {
					return filepath.SkipDir
				}
				return nil
			}
			name := filepath.ToSlash(rel)
			if d.Type()&fs.ModeSymlink != 0 {
				if _, err := resolveModel([]string{root}, name); err != nil {
					return nil
				}
			} else if !d.Type().IsRegular() {
				return nil
			}
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
			return nil
		})
	}
	slices.Sort(out)
	return out
}
