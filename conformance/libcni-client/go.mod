module cnichain.dev/conformance/libcni-client

go 1.22

require github.com/containernetworking/cni v1.3.0
