"""Link impairments, per direction: rate (tbf), loss (nftables random drop, no sch_netem needed),
and delay, jitter, corruption, duplication through netem where the kernel has it.

Each direction is shaped where its packets leave: a host's end of a link shapes what the host
sends; what a bridge sends to a host is rate-limited on the machine's end of the veth, and its
loss is drawn on the host end's ingress."""

from __future__ import annotations

import re
from dataclasses import dataclass

from netemu.linux import namespaces, traffic

NETEM_KEYS = ("delay", "jitter", "corrupt", "duplicate")
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)([kmgt]?)(i?)(bit|bps)$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def rate_bps(text: str) -> int:
    """tc's rate syntax in bits per second: 10mbit, 512kbit, 1gibit; 'bps' means bytes/s."""
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(f"invalid rate {text}")
    number, unit, binary, kind = match.groups()
    base = 1024 if binary else 1000
    value = float(number) * base ** _UNITS[unit.lower()]
    return int(value * (8 if kind.lower() == "bps" else 1))


@dataclass(frozen=True)
class Shaping:
    rate: int | None = None
    loss: float | None = None
    netem: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: dict[str, str] | None) -> Shaping:
        spec = spec or {}
        netem: list[str] = []
        if any(key in spec for key in NETEM_KEYS):
            # netem carries everything at once (loss and rate included); jitter follows the delay.
            if "delay" in spec:
                netem += ["delay", spec["delay"], *([spec["jitter"]] if "jitter" in spec else [])]
            for key in ("loss", "corrupt", "duplicate", "rate"):
                if key in spec:
                    netem += [key, spec[key]]
        loss = float(spec["loss"].rstrip("%")) if "loss" in spec else None
        return cls(rate=rate_bps(spec["rate"]) if "rate" in spec else None, loss=loss, netem=tuple(netem))

    def empty(self) -> bool:
        return self.rate is None and self.loss is None and not self.netem


def shape_host_end(netns_pid: int, dev: str, shaping: Shaping, *, ingress_loss: bool) -> None:
    """Shape what `dev` sends (and, towards a bridge, drop at random what it receives)."""
    with namespaces.entered(netns_pid, ("net",)):
        traffic.clear_qdisc(dev)
        if shaping.netem:
            traffic.set_netem(dev, list(shaping.netem))
            traffic.set_loss(dev, None, None)
            return
        if shaping.rate:
            traffic.set_rate(dev, shaping.rate)
        traffic.set_loss(dev, shaping.loss, shaping.loss if ingress_loss else None)


def shape_machine_end(dev: str, shaping: Shaping) -> None:
    """The bridge-to-host direction's rate (or netem) on the machine's end of the veth."""
    traffic.clear_qdisc(dev)
    if shaping.netem:
        traffic.set_netem(dev, list(shaping.netem))
    elif shaping.rate:
        traffic.set_rate(dev, shaping.rate)
