package main

// The "images" of this node are local programs: a JSON table maps an image repository
// (no tag, no digest) to the argv and env that image would have had, so a pod spec
// written for a real cluster runs unchanged here.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// ImageEntry is what a container image would contribute: ENTRYPOINT, CMD, ENV, WORKDIR
// and the files a pod spec names by their path in the image.
type ImageEntry struct {
	Entrypoint []string          `json:"entrypoint"`
	Cmd        []string          `json:"cmd,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	WorkDir    string            `json:"workdir,omitempty"`
	// Files: path in the image -> the local file that is it (bind-mounted read-only).
	Files map[string]string `json:"files,omitempty"`
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	return keys
}

// workDir is the container's workingDir, else the image's WORKDIR (Flagger's chart runs
// `./flagger` from it).
func workDir(e ImageEntry, containerWorkingDir string) string {
	if containerWorkingDir != "" {
		return containerWorkingDir
	}
	return e.WorkDir
}

// loadImageTable reads the table; it is read again at every container start so the
// supervisor can fix a missing entry without restarting the node.
func loadImageTable(path string) (map[string]ImageEntry, error) {
	if path == "" {
		return map[string]ImageEntry{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image table: %w", err)
	}
	t := map[string]ImageEntry{}
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("image table %s: %w", path, err)
	}
	return t, nil
}

// imageRepository strips the digest ("@sha256:...") and the tag (a colon after the
// last slash: a colon before it belongs to a registry port).
func imageRepository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	slash := strings.LastIndex(image, "/")
	if i := strings.LastIndex(image, ":"); i > slash {
		image = image[:i]
	}
	return image
}

// lookupImage finds an image by repository, also under the names Docker treats as the
// same ("nginx" = "docker.io/library/nginx", "istio/proxyv2" = "docker.io/istio/proxyv2").
func lookupImage(table map[string]ImageEntry, image string) (ImageEntry, string, bool) {
	repo := imageRepository(image)
	for _, name := range repoAliases(repo) {
		if e, ok := table[name]; ok {
			return e, name, true
		}
	}
	return ImageEntry{}, repo, false
}

func repoAliases(repo string) []string {
	out := []string{repo}
	short := repo
	for _, p := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"} {
		if strings.HasPrefix(repo, p) {
			short = strings.TrimPrefix(repo, p)
			break
		}
	}
	if short != repo {
		out = append(out, short)
	}
	if !strings.Contains(short, "/") {
		out = append(out, "docker.io/library/"+short)
	} else if first := short[:strings.Index(short, "/")]; !strings.ContainsAny(first, ".:") && first != "localhost" {
		out = append(out, "docker.io/"+short)
	}
	return dedup(out)
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// resolveArgv applies Kubernetes' rules: command replaces ENTRYPOINT and then CMD is
// dropped; args replace CMD.
func resolveArgv(e ImageEntry, command, args []string) ([]string, error) {
	var argv []string
	switch {
	case len(command) > 0:
		argv = append(append(argv, command...), args...)
	case len(args) > 0:
		argv = append(append(argv, e.Entrypoint...), args...)
	default:
		argv = append(append(argv, e.Entrypoint...), e.Cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command: the image table entry has no entrypoint and the pod gives no command")
	}
	return argv, nil
}

// containerEnv merges the image's env with the pod's (the pod wins) and adds what a
// container runtime would (PATH, HOME, HOSTNAME).
func containerEnv(e ImageEntry, podEnv map[string]string, hostname string, uid int) []string {
	m := map[string]string{}
	for k, v := range e.Env {
		m[k] = v
	}
	for k, v := range podEnv {
		m[k] = v
	}
	if _, ok := m["PATH"]; !ok {
		m["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	if _, ok := m["HOME"]; !ok {
		if uid == 0 {
			m["HOME"] = "/root"
		} else {
			m["HOME"] = "/"
		}
	}
	if _, ok := m["HOSTNAME"]; !ok {
		m["HOSTNAME"] = hostname
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sortStrings(out)
	return out
}
