package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

// docker runs the docker CLI and returns its trimmed output, failing the test on error.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestDockerImage builds the image as `make docker` does (static binaries FROM scratch), runs
// it, produces and consumes through its published port with the SDK, kills the container
// (SIGKILL) and starts it again: the acknowledged records are still there. It needs a Docker
// engine; it skips, saying so, where none answers.
func TestDockerImage(t *testing.T) {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine answers (docker info: %v: %s): the image test needs one", err, strings.TrimSpace(string(out)))
	}
	ctxDir := t.TempDir()
	bin := filepath.Join(ctxDir, "bin", "docker")
	build := exec.Command("go", "build", "-trimpath", "-o", bin+"/", "../runneld", "../runnel")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("runnel:test-%d", time.Now().UnixNano())
	docker(t, "build", "-q", "-t", tag, ctxDir)
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	// The broker must advertise the address clients reach it at (metadata names it as every
	// partition's leader): the host port mapped to the container's 9420.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostAddr := ln.Addr().String()
	_ = ln.Close()
	id := docker(t, "run", "-d", "-p", hostAddr+":9420", "-e", "RUNNEL_ADVERTISE_ADDR="+hostAddr, tag)
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", "-v", id).Run() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	connect := func() *client.Client {
		t.Helper()
		addr := hostAddr
		deadline := time.Now().Add(testTimeout)
		for {
			c, err := client.New(ctx, client.WithBrokers(addr), client.WithDialTimeout(time.Second))
			if err == nil {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("the container's broker at %s never answered: %v\n%s", addr, err, docker(t, "logs", id))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	c := connect()
	if err := c.CreateTopic(ctx, "boxed", 1, 1, nil); err != nil {
		t.Fatal(err)
	}
	var recs []*client.Record
	for i := range 100 {
		recs = append(recs, &client.Record{Topic: "boxed", Value: []byte(fmt.Sprint("v", i))})
	}
	if err := c.ProduceSync(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()

	docker(t, "kill", id) // SIGKILL: no clean shutdown
	docker(t, "start", id)
	c = connect()
	defer c.Close()
	k := c.NewConsumer()
	defer k.Close()
	if err := k.Assign("boxed", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 100 {
		rs, err := k.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			got = append(got, string(r.Value))
		}
	}
	if got[0] != "v0" || got[99] != "v99" || len(got) != 100 {
		t.Fatalf("after kill and restart: %d records, %q ... %q", len(got), got[0], got[len(got)-1])
	}
}
