// Package container tests the repository's Dockerfile: it builds the image
// with buildah and runs its binaries.
package container

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// storage keeps buildah's images and containers under dir, apart from the
// machine's, with a containers.conf this kind of machine runs with: runc,
// cgroupfs and low ulimits.
type storage struct {
	t    *testing.T
	root string
	env  []string
}

func newStorage(t *testing.T) *storage {
	dir := t.TempDir()
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n"+
		"[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &storage{t: t, root: dir, env: append(os.Environ(), "CONTAINERS_CONF="+conf, "BUILDAH_ISOLATION=chroot")}
}

// buildah runs buildah with this storage and returns its trimmed output.
func (s *storage) buildah(args ...string) string {
	s.t.Helper()
	all := append([]string{"--root", filepath.Join(s.root, "root"), "--runroot", filepath.Join(s.root, "run"), "--storage-driver", "vfs"}, args...)
	cmd := exec.Command("buildah", all...)
	cmd.Env = s.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("buildah %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

func goEnv(t *testing.T, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// builderImage makes localhost/golang:1.26 from this machine's own Go and
// busybox, so that the Dockerfile's FROM golang:1.26 needs no registry.
func (s *storage) builderImage() {
	s.t.Helper()
	ctr := s.buildah("from", "scratch")
	mnt := s.buildah("mount", ctr)
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	for _, d := range []string{"bin", "etc/ssl/certs", "usr/local", "tmp", "root"} {
		run("mkdir", "-p", filepath.Join(mnt, d))
	}
	run("chmod", "1777", filepath.Join(mnt, "tmp"))
	run("cp", "/bin/busybox", filepath.Join(mnt, "bin", "busybox"))
	run("chroot", mnt, "/bin/busybox", "--install", "-s", "/bin")
	run("cp", "/etc/ssl/certs/ca-certificates.crt", filepath.Join(mnt, "etc/ssl/certs/"))
	if err := os.WriteFile(filepath.Join(mnt, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		s.t.Fatal(err)
	}
	run("cp", "-a", goEnv(s.t, "GOROOT"), filepath.Join(mnt, "usr/local/go"))
	s.buildah("umount", ctr)
	s.buildah("config", "--env", "PATH=/usr/local/go/bin:/bin", "--env", "GOPATH=/go", "--env", "GOTOOLCHAIN=local",
		"--env", "GOPROXY="+goEnv(s.t, "GOPROXY"), "--workingdir", "/", ctr)
	s.buildah("commit", "--quiet", ctr, "localhost/golang:1.26")
	s.buildah("rm", ctr)
}

// TestImage builds the Dockerfile at the repository's root with buildah, as
// `make image` does where there is no Docker, then runs its binaries: the
// version stamped at build time, a model runtime's gen-weights, the user.
func TestImage(t *testing.T) {
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("buildah is not installed (Debian packages buildah, runc, busybox-static): the image is not built")
	}
	if os.Geteuid() != 0 || runtime.GOOS != "linux" {
		t.Skip("building the image with buildah needs root on Linux")
	}
	if testing.Short() {
		t.Skip("building the image takes minutes; not with -short")
	}
	s := newStorage(t)
	s.builderImage()
	const version = "v0.0.0-imagetest"
	s.buildah("bud", "--quiet", "--network=host", "--layers", "--build-arg", "VERSION="+version,
		"-t", "localhost/batchmesh:test", "-f", "../../Dockerfile", "../..")
	ctr := s.buildah("from", "localhost/batchmesh:test")
	runIn := func(args ...string) string {
		return s.buildah(append([]string{"run", "--runtime", "runc", ctr, "--"}, args...)...)
	}
	if got, want := runIn("/usr/local/bin/sidecar", "-version"), "sidecar "+version; got != want {
		t.Errorf("sidecar -version in the image: %q, want %q", got, want)
	}
	if got, want := runIn("/usr/local/bin/model", "-version"), "model "+version; got != want {
		t.Errorf("model -version in the image: %q, want %q", got, want)
	}
	runIn("/usr/local/bin/model", "gen-weights", "-o", "/tmp/w.safetensors", "-sizes", "4,8,2")
	if got := s.buildah("inspect", "--format", "{{.OCIv1.Config.User}} {{index .OCIv1.Config.Labels \"org.opencontainers.image.version\"}}", "localhost/batchmesh:test"); got != fmt.Sprintf("1337:1337 %s", version) {
		t.Errorf("image user and version label: %q, want \"1337:1337 %s\"", got, version)
	}
}
