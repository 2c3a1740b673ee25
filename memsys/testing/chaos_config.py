"""The ``memsys chaos run`` configuration: a TOML file, the CLI's flags, and the profiles.

    seed = 7
    profile = "quick"                    # quick | default | deep
    experiments = ["faults", "network"]  # default: every experiment
    workdir = "chaos-work"               # where the run keeps its files (default: a new temp folder)
    report = "chaos-report"              # a folder (report.json + report.html) or a FILE.json

    [stores]                             # name = store spec (memsys.specs); default: the seven embedded
    chroma = "chroma+http://${STAGING_CHROMA:-127.0.0.1:8000}?collection=memsys-chaos"

    [workload]
    transactions = 40                    # per store in the fault experiment (or duration = seconds)
    rate = 20                            # transactions per second at most, over all threads
    concurrency = 2                      # threads running transactions
    delete_fraction = 0.2                # share of transactions that delete an earlier one's items
    fault_rate = 0.3                     # chance that a call fails while faults are on

    [toxiproxy]
    address = "${TOXIPROXY_URL}"         # an existing Toxiproxy server (staging), or
    start = true                         # start a local one (the default without an address)

    [network]
    faults = ["latency", "reset_peer", "down"]   # default: every toxic, and the proxy down

    [thresholds]                         # most allowed per experiment; beyond it the exit status is 1
    lost = 0
    recover_seconds = 60
    p99_ms = 5000                        # per store and operation, before and after faults

Strings may use ``${VAR}`` and ``${VAR:-default}`` (environment variables); relative paths are
taken from the config file's folder. Everything is checked when the config is loaded, before
any experiment runs: a bad key, path, seed, count, spec or unreachable Toxiproxy is a one-line
``ChaosConfigError`` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from memsys.domain.errors import InvalidInputError
from memsys.specs import StoreSpec, parse_spec

#: Every experiment ``memsys chaos run`` knows, in the order it runs them.
EXPERIMENTS = ("faults", "crash", "stateful", "network", "powerloss", "real")
#: What each runs on: the stores in [stores] ("faults", "network" through a Chroma server spec) or
#: embedded stores of its own in the workdir (the destructive ones: kills, damage, power loss).
DESCRIPTIONS = {
    "faults": "port-level fault injection during cross-store transactions, per store",
    "crash": "SIGKILL of transaction workers at random instants and protocol steps",
    "stateful": "the stateful model over the seven stores with simulated crashes (deep: and the manager machines "
                "over every adapter alone and mixed)",
    "network": "network faults through Toxiproxy between the Chroma client and a server",
    "powerloss": "power failures on a FUSE file system that forgets unsynced writes",
    "real": "disk full, damaged files, second openers, oversized writes, sustained updates",
}

#: The network matrix's faults by name: Toxiproxy's toxics, and "down" (the proxy disabled).
NETWORK_FAULTS = ("latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data", "down")
THRESHOLD_COUNTS = ("lost", "partial", "unexpected", "hung", "crashed", "errors")
THRESHOLDS = THRESHOLD_COUNTS + ("recover_seconds", "p99_ms")


@dataclasses.dataclass(frozen=True)
class Profile:
    """How hard each experiment works."""

    name: str
    transactions: int        # per store, fault experiment and network experiment
    kills: int               # SIGKILLs in the crash campaign
    stateful_examples: int
    stateful_steps: int
    dose: str                # the real-fault dose (memsys.testing.real_faults.DOSES)
    powerloss_transactions: int
    power_failures: int
    network_quick: bool      # the network matrix's smaller dose
    #: The settings profile (memsys.testing.profiles) the manager machines of scenarios/ run under
    #: as part of the stateful experiment, every adapter alone and the mixes; "" leaves them out.
    manager_machines: str = ""


PROFILES = {
    "quick": Profile("quick", 20, 5, 3, 15, "quick", 12, 2, True),
    # About ten minutes on the 2-core reference machine (the SIGKILL rounds over seven stores are
    # the dearest part: 20 kills during transactions and 4 during single-store writes).
    "default": Profile("default", 60, 20, 10, 25, "default", 30, 3, True),
    "deep": Profile("deep", 300, 300, 100, 40, "deep", 200, 12, False, manager_machines="deep"),
}


class ChaosConfigError(InvalidInputError):
    """A chaos config or flag that cannot run; the message is one line naming what is wrong."""


@dataclasses.dataclass
class Workload:
    transactions: int | None = None   # None: the profile's
    duration: float | None = None     # seconds for the fault experiment per store, instead of a count
    rate: float | None = None         # transactions per second at most, None: as fast as it goes
    concurrency: int = 1
    delete_fraction: float = 0.2
    fault_rate: float = 0.3


@dataclasses.dataclass
class ToxiproxySettings:
    address: str | None = None   # http://HOST:PORT of an existing server
    start: bool = True           # start a local server when no address is given

    @property
    def host(self) -> str | None:
        return urllib.parse.urlsplit(self.address).hostname if self.address else None


@dataclasses.dataclass
class ChaosConfig:
    seed: int = 0
    profile: Profile = PROFILES["default"]
    experiments: tuple[str, ...] = EXPERIMENTS
    workdir: str | None = None
    report: str | None = None
    stores: dict[str, StoreSpec] = dataclasses.field(default_factory=dict)
    workload: Workload = dataclasses.field(default_factory=Workload)
    toxiproxy: ToxiproxySettings = dataclasses.field(default_factory=ToxiproxySettings)
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    #: The network faults to run (each on both streams and where the matrix starts it mid-transaction).
    network_faults: tuple[str, ...] = NETWORK_FAULTS
    source: str | None = None  # the config file, for messages

    @property
    def transactions(self) -> int:
        return self.workload.transactions or self.profile.transactions

    def threshold(self, key: str) -> float | None:
        if key in self.thresholds:
            return self.thresholds[key]
        return 0 if key in THRESHOLD_COUNTS else None

    def report_paths(self, workdir: str) -> tuple[str, str]:
        """(report.json, report.html): a FILE.json gets FILE.html beside it; a folder gets both."""
        target = self.report or workdir
        if target.endswith(".json"):
            return target, target[:-5] + ".html"
        return os.path.join(target, "report.json"), os.path.join(target, "report.html")

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "profile": self.profile.name, "experiments": list(self.experiments),
                "stores": {name: str(spec) for name, spec in self.stores.items()},
                "workload": dataclasses.asdict(self.workload), "toxiproxy": dataclasses.asdict(self.toxiproxy),
                "thresholds": dict(self.thresholds), "network_faults": list(self.network_faults),
                "source": self.source}


# ------------------------------------------------------------------------------------------ loading

_TOP = {"seed", "profile", "experiments", "workdir", "report", "stores", "workload", "toxiproxy", "thresholds",
        "network"}
_WORKLOAD = {f.name for f in dataclasses.fields(Workload)}
_TOXIPROXY = {"address", "start"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def _where(source: str | None, key: str) -> str:
    return f"{source}: {key}" if source else key


def _error(source: str | None, key: str, why: str) -> ChaosConfigError:
    return ChaosConfigError(" ".join(f"{_where(source, key)}: {why}".split()))


def _expand(source: str | None, key: str, value: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in strings, recursively."""
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    raise _error(source, key, f"${{{name}}} is not set (give it, or write ${{{name}:-default}})")
                return default
            return found
        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [_expand(source, key, v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(source, f"{key}.{k}", v) for k, v in value.items()}
    return value


def load_config(path: str) -> dict[str, Any]:
    """The TOML file as a dict with variables expanded and paths made absolute (unchecked)."""
    if not os.path.isfile(path):
        raise ChaosConfigError(f"--config {path}: no such file")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ChaosConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ChaosConfigError(f"--config {path}: cannot read it: {exc.strerror}") from exc
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise _error(path, unknown[0], f"unknown key; the keys are {', '.join(sorted(_TOP))}")
    return {k: _expand(path, k, v) for k, v in raw.items()}


def build_config(data: Mapping[str, Any] | None = None, *, source: str | None = None, seed: int | None = None,
                 profile: str | None = None, experiments: list[str] | None = None, workdir: str | None = None,
                 report: str | None = None, toxiproxy: str | None = None, check_toxiproxy: bool = True,
                 ) -> ChaosConfig:
    """A checked ChaosConfig from a loaded file (``data``) and the CLI's flags (which win)."""
    data = dict(data or {})
    base = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()

    def path_of(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _error(source, key, f"must be a path, got {value!r}")
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    config = ChaosConfig(source=source)
    config.seed = _seed(source, seed if seed is not None else data.get("seed", 0), "seed" if seed is None else "--seed")
    name = profile or data.get("profile", "default")
    if name not in PROFILES:
        raise _error(source, "profile", f"unknown profile {name!r}; use one of {', '.join(PROFILES)}")
    config.profile = PROFILES[name]
    chosen = experiments if experiments is not None else data.get("experiments", list(EXPERIMENTS))
    if not isinstance(chosen, list) or not chosen or not all(isinstance(e, str) for e in chosen):
        raise _error(source, "experiments", f"must be a non-empty list of names from {', '.join(EXPERIMENTS)}")
    for e in chosen:
        if e not in EXPERIMENTS:
            raise _error(source, "experiments", f"unknown experiment {e!r}; use some of {', '.join(EXPERIMENTS)}")
    config.experiments = tuple(e for e in EXPERIMENTS if e in chosen)
    if workdir is not None:
        config.workdir = os.path.abspath(workdir)
    elif "workdir" in data:
        config.workdir = path_of("workdir", data["workdir"])
    if report is not None:
        config.report = os.path.abspath(report)
    elif "report" in data:
        config.report = path_of("report", data["report"])
    if config.workdir is not None:
        _check_writable(source, "workdir" if workdir is None else "--workdir", config.workdir, folder=True)
    if config.report is not None:
        key = "report" if report is None else "--report"
        if config.report.endswith(".json"):
            _check_writable(source, key, config.report, folder=False)
            _check_writable(source, key, config.report[:-5] + ".html", folder=False)
        else:
            _check_writable(source, key, config.report, folder=True)
    config.stores = _stores(source, data.get("stores", {}), path_of)
    config.workload = _workload(source, data.get("workload", {}))
    config.toxiproxy = _toxiproxy(source, data.get("toxiproxy", {}), toxiproxy)
    config.thresholds = _thresholds(source, data.get("thresholds", {}))
    config.network_faults = _network(source, data.get("network", {}))
    if check_toxiproxy and config.toxiproxy.address and "network" in config.experiments:
        _ping_toxiproxy(source, config.toxiproxy.address)
    if "network" in config.experiments and config.stores:
        remote = [n for n, s in config.stores.items() if s.server is not None]
        if len(remote) > 1:
            raise _error(source, "stores", f"the network experiment drives one Chroma server; {len(remote)} are "
                                           f"given ({', '.join(remote)})")
    return config


def _seed(source: str | None, value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise _error(source, key, f"must be an integer from 0 to 2**63-1, got {value!r}")
    return value


def _positive(source: str | None, key: str, value: Any, *, integer: bool, upper: float) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or not 0 < value <= upper:
        what = "an integer" if integer else "a number"
        raise _error(source, key, f"must be {what} above 0 and at most {upper:g}, got {value!r}")
    return value


def _fraction(source: str | None, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _error(source, key, f"must be a number from 0 to 1, got {value!r}")
    return float(value)


def _workload(source: str | None, data: Any) -> Workload:
    if not isinstance(data, dict):
        raise _error(source, "workload", "must be a table")
    unknown = sorted(set(data) - _WORKLOAD)
    if unknown:
        raise _error(source, f"workload.{unknown[0]}", f"unknown key; the keys are {', '.join(sorted(_WORKLOAD))}")
    w = Workload()
    if "transactions" in data:
        w.transactions = _positive(source, "workload.transactions", data["transactions"], integer=True, upper=10**7)
    if "duration" in data:
        w.duration = float(_positive(source, "workload.duration", data["duration"], integer=False, upper=7 * 86400))
    if "rate" in data:
        w.rate = float(_positive(source, "workload.rate", data["rate"], integer=False, upper=1e6))
    if "concurrency" in data:
        w.concurrency = _positive(source, "workload.concurrency", data["concurrency"], integer=True, upper=64)
    if "delete_fraction" in data:
        w.delete_fraction = _fraction(source, "workload.delete_fraction", data["delete_fraction"])
    if "fault_rate" in data:
        w.fault_rate = _fraction(source, "workload.fault_rate", data["fault_rate"])
    return w


def _toxiproxy(source: str | None, data: Any, address: str | None) -> ToxiproxySettings:
    if not isinstance(data, dict):
        raise _error(source, "toxiproxy", "must be a table")
    unknown = sorted(set(data) - _TOXIPROXY)
    if unknown:
        raise _error(source, f"toxiproxy.{unknown[0]}", "unknown key; the keys are address, start")
    settings = ToxiproxySettings()
    if "start" in data:
        if not isinstance(data["start"], bool):
            raise _error(source, "toxiproxy.start", f"must be true or false, got {data['start']!r}")
        settings.start = data["start"]
    given = address if address is not None else data.get("address")
    if given is not None:
        key = "--toxiproxy" if address is not None else "toxiproxy.address"
        if not isinstance(given, str):
            raise _error(source, key, f"must be a URL such as http://127.0.0.1:8474, got {given!r}")
        parts = urllib.parse.urlsplit(given if "://" in given else f"http://{given}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or not port or parts.path not in ("", "/"):
            raise _error(source, key, f"must be a URL such as http://127.0.0.1:8474, got {given!r}")
        settings.address = f"{parts.scheme}://{parts.hostname}:{port}"
    return settings


def _ping_toxiproxy(source: str | None, address: str) -> None:
    try:
        with urllib.request.urlopen(address + "/version", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _error(source, "toxiproxy.address", f"no Toxiproxy answers at {address} ({reason})") from None


def _network(source: str | None, data: Any) -> tuple[str, ...]:
    if not isinstance(data, dict):
        raise _error(source, "network", "must be a table")
    unknown = sorted(set(data) - {"faults"})
    if unknown:
        raise _error(source, f"network.{unknown[0]}", "unknown key; the key is faults")
    faults = data.get("faults", list(NETWORK_FAULTS))
    if not isinstance(faults, list) or not faults or any(f not in NETWORK_FAULTS for f in faults):
        raise _error(source, "network.faults", f"must be a non-empty list from {', '.join(NETWORK_FAULTS)}, "
                                               f"got {faults!r}")
    return tuple(f for f in NETWORK_FAULTS if f in faults)


def _thresholds(source: str | None, data: Any) -> dict[str, float]:
    if not isinstance(data, dict):
        raise _error(source, "thresholds", "must be a table")
    found = {}
    for key, value in data.items():
        if key not in THRESHOLDS:
            raise _error(source, f"thresholds.{key}", f"unknown threshold; use {', '.join(THRESHOLDS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise _error(source, f"thresholds.{key}", f"must be a number >= 0, got {value!r}")
        found[key] = value
    return found


def _stores(source: str | None, data: Any, path_of: Any) -> dict[str, StoreSpec]:
    if not isinstance(data, dict):
        raise _error(source, "stores", "must be a table of NAME = \"SPEC\"")
    stores = {}
    for name, text in data.items():
        key = f"stores.{name}"
        if not _NAME.match(name) or name == "witness":
            raise _error(source, key, "a store name is letters, digits, _ and - (and not 'witness', the run's own)")
        if not isinstance(text, str):
            raise _error(source, key, f"must be a store spec string such as 'lmdb:PATH', got {text!r}")
        try:
            spec = parse_spec(text)
        except InvalidInputError as exc:
            raise _error(source, key, str(exc)) from None
        if spec.path is not None and not os.path.isabs(spec.path):  # relative to the config file
            spec = dataclasses.replace(spec, path=path_of(key, spec.path))
        if spec.path is not None and spec.server is None:
            _check_writable(source, key, spec.path, folder=None)
        stores[name] = spec
    return stores


def _check_writable(source: str | None, key: str, path: str, *, folder: bool | None) -> None:
    """``path`` can be written: it is (a folder / a file, as asked) and writable, or the first folder
    above it that exists is writable. ``folder=None``: either."""
    if os.path.exists(path):
        if folder is True and not os.path.isdir(path):
            raise _error(source, key, f"{path} is a file, not a folder")
        if folder is False and os.path.isdir(path):
            raise _error(source, key, f"{path} is a folder; give a FILE.json or a folder for the report")
        if not os.access(path if os.path.isdir(path) else os.path.dirname(path) or ".", os.W_OK):
            raise _error(source, key, f"{path} is not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise _error(source, key, f"cannot create {path}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _error(source, key, f"cannot create {path}: {parent} is not writable")


__all__ = ["EXPERIMENTS", "PROFILES", "Profile", "ChaosConfig", "ChaosConfigError", "Workload",
           "ToxiproxySettings", "load_config", "build_config"]
