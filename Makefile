# redis-allocator: the two commands a fresh Debian/Ubuntu machine needs are
#   make demo   run the demo (embedded Redis unless ARGS="--redis-url redis://...")
#   make test   install redis-server if missing, then go test -race ./...

GO   ?= go
ARGS ?=

.PHONY: all demo test redis-server bench vet fmt-check

all: vet test

demo:
	$(GO) run ./cmd/redis-allocator demo $(ARGS)

test: redis-server
	$(GO) test -race ./...

# redis-server from Debian's packages; sudo only when not root.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server not found: installing it with apt-get"; \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	fi
	@redis-server --version

# Comparison benchmarks (own module, so competitors stay out of go.mod).
bench: redis-server
	$(GO) test -run '^$$' -bench . ./lock/
	cd bench && $(GO) run ./lockbench
	cd bench && $(GO) run ./allocbench
	cd bench && $(GO) run ./taskbench

vet:
	$(GO) vet ./...

fmt-check:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
