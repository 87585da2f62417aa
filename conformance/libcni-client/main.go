// Command libcni-client drives a conflist through upstream libcni, as a container runtime does.
//
// Usage: libcni-client OP < request.json, where OP is add, check, del, gc, status, cached or
// version and the request names the conflist, the plugin directories, the cache directory and the
// attachment. It prints one JSON object: {"ok": true, "result": ...} or
// {"ok": false, "error": {"code", "msg", "details"}, "text": "..."}; the exit code is 0 either way
// (1 only when the request itself cannot be read), so the caller sees libcni's own answer.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

type request struct {
	Conflist         json.RawMessage        `json:"conflist"`
	CNIPath          []string               `json:"cniPath"`
	CacheDir         string                 `json:"cacheDir"`
	ContainerID      string                 `json:"containerID"`
	NetNS            string                 `json:"netns"`
	IfName           string                 `json:"ifname"`
	Args             [][2]string            `json:"args"`
	CapabilityArgs   map[string]interface{} `json:"capabilityArgs"`
	ValidAttachments []types.GCAttachment   `json:"validAttachments"`
	PluginType       string                 `json:"pluginType"`
}

type answer struct {
	OK     bool         `json:"ok"`
	Result interface{}  `json:"result,omitempty"`
	Error  *types.Error `json:"error,omitempty"`
	Text   string       `json:"text,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: libcni-client add|check|del|gc|status|cached|version < request.json")
		os.Exit(2)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(fmt.Errorf("read request: %w", err))
	}
	var req request
	if err := json.Unmarshal(raw, &req); err != nil {
		fail(fmt.Errorf("decode request: %w", err))
	}
	out := run(os.Args[1], &req)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(fmt.Errorf("encode answer: %w", err))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "libcni-client:", err)
	os.Exit(1)
}

func run(op string, req *request) answer {
	ctx := context.Background()
	cni := libcni.NewCNIConfigWithCacheDir(req.CNIPath, req.CacheDir, nil)
	if op == "version" {
		info, err := cni.GetVersionInfo(ctx, req.PluginType)
		if err != nil {
			return failure(err)
		}
		return answer{OK: true, Result: info.SupportedVersions()}
	}
	list, err := libcni.ConfListFromBytes(req.Conflist)
	if err != nil {
		return failure(err)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    req.ContainerID,
		NetNS:          req.NetNS,
		IfName:         req.IfName,
		Args:           req.Args,
		CapabilityArgs: req.CapabilityArgs,
	}
	switch op {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return failure(err)
		}
		return answer{OK: true, Result: result}
	case "check":
		return done(cni.CheckNetworkList(ctx, list, rt))
	case "del":
		return done(cni.DelNetworkList(ctx, list, rt))
	case "gc":
		return done(cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: req.ValidAttachments}))
	case "status":
		return done(cni.GetStatusNetworkList(ctx, list))
	case "cached":
		result, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			return failure(err)
		}
		return answer{OK: true, Result: result}
	}
	return failure(fmt.Errorf("unknown operation %q", op))
}

func done(err error) answer {
	if err != nil {
		return failure(err)
	}
	return answer{OK: true}
}

func failure(err error) answer {
	var typed *types.Error
	if errors.As(err, &typed) {
		return answer{Error: typed, Text: err.Error()}
	}
	return answer{Text: err.Error()}
}
