# netemu: two commands on a fresh Debian machine, as root:
#   make run    installs what is missing, brings up topologies/seed.yaml, pings r2 from r1, runs its
#               checks, takes it down
#   make test   installs what is missing and runs the whole suite (lint, unit, integration)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
NETEMU := $(VENV)/bin/netemu
# Debian packages netemu and its tests use: Python, a C compiler and static libc (netemu-init),
# iproute2, ping, nftables, procps, util-linux (setpriv, nsenter), kmod; FRRouting for the ospf lab
# (it runs inside the lab's hosts only: the machine's own frr service is stopped and disabled);
# graphviz draws `netemu graph -o x.svg|x.png`; iptables, whose FORWARD chains netemu opens to its
# bridges and tests/integration/test_firewall.py sets to DROP; skopeo, through which `image pull`
# fetches registry images, and docker-registry, the registry server tests/integration/test_registry.py
# starts on 127.0.0.1 with its own configuration (the machine's own registry service is stopped and
# disabled: it would listen on port 5000 of every address); mmdebstrap, which builds the FRR image
# from Debian packages that tests/integration/test_containerlab_frr.py serves from its registry
# (cached under /var/cache/netemu-tests).
DEB_PACKAGES := python3 python3-venv python3-pip gcc libc6-dev make iproute2 iputils-ping nftables busybox-static \
	procps util-linux kmod frr graphviz iptables skopeo docker-registry mmdebstrap
# dockerd for test_firewall.py, which starts a private one (own data root, socket and pidfile) and
# stops it; a machine that has a dockerd already (docker-ce, which conflicts with docker.io) keeps
# it. The package must never start the machine's own Docker: a dockerd that ran once leaves the
# FORWARD policy at DROP. So it is installed without its recommends, with services kept from
# starting (a policy-rc.d, unless the machine has one already), and its units disabled.
DOCKER_PACKAGE := docker.io

.PHONY: all deps frr-off registry-off docker-off venv run test lint unit bench clean-labs

all: test

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		if [[ " $$missing " == *" frr "* ]]; then $(MAKE) --no-print-directory frr-off; fi; \
		if [[ " $$missing " == *" docker-registry "* ]]; then $(MAKE) --no-print-directory registry-off; fi; \
	fi
	@if ! command -v dockerd >/dev/null && \
		! dpkg-query -W -f '$${Status}' $(DOCKER_PACKAGE) 2>/dev/null | grep -q 'ok installed'; then \
		echo "installing Debian package $(DOCKER_PACKAGE) (its service stays off)"; \
		rc=/usr/sbin/policy-rc.d; own=; \
		if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc && chmod 755 $$rc && own=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(DOCKER_PACKAGE) >/dev/null; status=$$?; \
		if [ -n "$$own" ]; then rm -f $$rc; fi; \
		$(MAKE) --no-print-directory docker-off; exit $$status; \
	fi

# The frr package starts and enables frr.service on the machine; netemu only runs FRR inside lab hosts.
frr-off:
	@{ if [ -d /run/systemd/system ]; then systemctl disable --now frr; \
	else \
		if [ -x /etc/init.d/frr ]; then /etc/init.d/frr stop; fi; \
		if command -v systemctl; then systemctl disable frr; elif command -v update-rc.d; then update-rc.d frr disable; fi; \
	fi; } >/dev/null 2>&1 || true

# The docker-registry package starts and enables its service; only the test runs a registry, its own.
registry-off:
	@{ if [ -d /run/systemd/system ]; then systemctl disable --now docker-registry; \
	else \
		if [ -x /etc/init.d/docker-registry ]; then /etc/init.d/docker-registry stop; fi; \
		if command -v systemctl; then systemctl disable docker-registry; fi; \
		if command -v update-rc.d; then update-rc.d docker-registry disable; fi; \
	fi; } >/dev/null 2>&1 || true

# Docker's units off at boot too (the package enables them); only the test starts a dockerd.
docker-off:
	@{ if [ -d /run/systemd/system ]; then systemctl disable --now docker.service docker.socket; \
	else \
		if [ -x /etc/init.d/docker ]; then /etc/init.d/docker stop; fi; \
		if command -v systemctl; then systemctl disable docker.service docker.socket; fi; \
		if command -v update-rc.d; then update-rc.d docker disable; fi; \
	fi; } >/dev/null 2>&1 || true

$(VENV)/.installed: pyproject.toml netemu/linux/init/netemu-init.c
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	$(PY) -m netemu.linux.initbin >/dev/null
	touch $@

venv: deps $(VENV)/.installed

run: venv
	$(NETEMU) validate topologies/seed.yaml
	@$(NETEMU) down seed -q
	@set -e; trap '$(NETEMU) down seed' EXIT; \
	$(NETEMU) up topologies/seed.yaml; \
	$(NETEMU) ps; \
	$(NETEMU) inspect seed; \
	$(NETEMU) exec seed r1 -- ping -c 3 -W 2 10.1.0.2; \
	$(NETEMU) check topologies/seed.yaml

lint: venv
	$(VENV)/bin/ruff check netemu tests bench

unit: venv
	$(PY) -m pytest -q tests/unit

test: venv lint
	$(PY) -m pytest -q -ra

# Figures next to baselines measured in the same run (medians of 3); nothing asserts on speed.
bench: venv
	$(PY) bench/updown.py --sizes 10,100,300,1000
	$(PY) bench/scale.py --hosts 1000 --routers 100 --pairs 1000 --memory
	$(PY) bench/reach.py

clean-labs: venv
	$(NETEMU) down --all
	$(NETEMU) clean
