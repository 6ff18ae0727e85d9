# Two commands matter: `make run` (the product) and `make test` (lint + the whole test suite).
# Each installs what it needs first; a fresh Debian/Python machine needs nothing else.

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test lint bench setup system-deps test-system-deps redis python-deps assets clean

run: system-deps python-deps assets
	$(BIN)/avatarbot run

test: test-system-deps python-deps assets
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: python-deps
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: export PYTHONPATH := .
bench: test-system-deps python-deps assets
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/local_avatar.py
	$(BIN)/python bench/slack.py
	$(BIN)/python bench/web_viewer.py
	$(BIN)/python bench/cluster_bus.py

setup: test-system-deps python-deps assets

# espeak-ng speaks for the local avatar; npm fetches the viewer's browser SDKs.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	ldconfig -p | grep -q 'libespeak-ng.so.1 ' || missing="$$missing libespeak-ng1"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; \
	fi

# The tests also drive Debian's Chromium (never a downloaded browser), and run the store's
# contract tests on PostgreSQL too: the local cluster is started here if it is installed but
# stopped (idempotent: pg_isready first). Without a server those tests skip, and fail in CI.
# The cluster tests need a real Redis (tests/cluster: they fail under CI=true without one), and
# the several-workers test puts Debian's nginx in front of them: it runs its own nginx as a
# foreground process on a free loopback port with a config of its own (the system service the
# package sets up is not used). nginx is in /usr/sbin, which a non-root PATH may lack.
test-system-deps: system-deps redis
	@command -v chromium >/dev/null || { \
	  echo "installing Debian packages: chromium"; \
	  $(APT) update -qq && $(APT) install -y -qq chromium >/dev/null; }
	@PATH="$$PATH:/usr/sbin" command -v nginx >/dev/null || { \
	  echo "installing Debian packages: nginx"; \
	  $(APT) update -qq && $(APT) install -y -qq nginx >/dev/null; }
	@if command -v pg_isready >/dev/null && [ -d /etc/postgresql ] \
	    && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  echo "starting PostgreSQL"; \
	  $(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 1 40); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.25; done; \
	fi

# Redis on 127.0.0.1:6379 for tests/cluster: left alone if it answers, else started (Debian's
# redis-server, installed if missing), keeping nothing on disk. Idempotent.
redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
	  command -v redis-server >/dev/null || { \
	    echo "installing Debian packages: redis-server"; \
	    $(APT) update -qq && $(APT) install -y -qq redis-server >/dev/null; }; \
	  echo "starting redis-server on 127.0.0.1:6379"; \
	  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes; \
	  for i in 1 2 3 4 5 6 7 8 9 10; do \
	    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done; }

python-deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

assets:
	@if [ -f web/assets/install.sh ]; then bash web/assets/install.sh; fi

clean:
	rm -rf $(VENV) web/static/vendor web/assets/node_modules test-artifacts
