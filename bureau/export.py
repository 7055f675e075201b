"""One evidence bundle as a zip for a penalty file: the bundle as the box made it, and a printable summary.

Layout: `BUNDLE_ID/` (manifest.json and the files, byte for byte: `edge-agent verify-evidence
BUNDLE_ID --key KEY` accepts it after unzipping), `summary.html` beside it (site, device,
time, kind, figures against the limit, the snapshot, every hash, the key fingerprint and the
verification result at export time) and `README.txt` (how to check it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from bureau import __version__
from bureau.config.model import BureauConfig
from bureau.store import EvidenceFiles, Store
from edge_agent.evidence.verify import verify_bundle
from edge_agent.security.keys import KeyFileError, parse_public_key


def fingerprint(key_b64: str | None) -> str:
    """SHA-256 of the raw public key, in groups of four; its first 16 digits are the key id."""
    if not key_b64:
        return ""
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except ValueError:
        return ""
    digest = hashlib.sha256(raw).hexdigest()
    return " ".join(digest[i:i + 4] for i in range(0, 64, 4))


def export_zip(config: BureauConfig, store: Store, files: EvidenceFiles, site: str, device: str,
               bundle: str) -> bytes | None:
    row = store.bundle(site, device, bundle)
    if row is None or not row["manifest"]:
        return None
    folder = files.bundle_dir(site, device, bundle)
    dev = store.device(site, device) or {}
    key = None
    if dev.get("key_b64"):
        try:
            key = parse_public_key(dev["key_b64"])
        except KeyFileError:
            key = None
    report = verify_bundle(folder, key)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                zf.write(path, f"{bundle}/{path.name}")
        zf.writestr("summary.html", summary_html(config, row, dev, list(report.problems), key is not None))
        zf.writestr("README.txt", _readme(bundle, dev.get("key_b64")))
    return buf.getvalue()


def _readme(bundle: str, key_b64: str | None) -> str:
    key = f" --key {key_b64}" if key_b64 else ""
    return (f"Evidence bundle {bundle}, exported by edge-bureau {__version__}.\n\n"
            f"Open summary.html to read or print it. To check the bundle yourself:\n\n"
            f"    edge-agent verify-evidence {bundle}{key}\n\n"
            "It checks every file's SHA-256 against manifest.json and the Ed25519 signature over the manifest;\n"
            "with --key, that the registered device key made it.\n")


def summary_html(config: BureauConfig, row: dict[str, Any], dev: dict[str, Any], problems: list[str],
                 keyed: bool) -> str:
    tz = ZoneInfo(config.timezone)
    man = row["manifest"]
    violation = man.get("violation") or {}
    figures = violation.get("figures") or {}
    site, device = row["site"], row["device"]

    def when(text: Any) -> str:
        try:
            return datetime.fromisoformat(str(text)).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        except ValueError:
            return escape(str(text))

    if problems:
        verdict, css = "校验失败 FAILED: " + "; ".join(problems), "bad"
    elif not keyed:
        verdict, css = ("完整，但设备密钥未登记 — intact, but the device key is not registered: origin not proven",
                        "warn")
    else:
        verdict, css = "有效 VALID: every hash matches and the registered device key signed it", "ok"
    limit = figures.get("limit")
    fig_rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td>"
        f"<td>{'&gt; ' + escape(str(limit)) if k != 'limit' and isinstance(v, (int, float)) and isinstance(limit, (int, float)) and v > limit else ''}</td></tr>"  # noqa: E501
        for k, v in figures.items())
    file_rows = "".join(f"<tr><td>{escape(str(f.get('name')))}</td><td>{f.get('size')}</td>"
                        f"<td class=mono>{escape(str(f.get('sha256')))}</td></tr>" for f in man.get("files") or [])
    snap = next((f["name"] for f in man.get("files") or [] if str(f.get("name", "")).startswith("snapshot")
                 and str(f.get("name")).endswith(".jpg")), None)
    bundle = escape(row["bundle"])
    img = f'<img src="{bundle}/{escape(snap)}" alt="snapshot">' if snap else "<p>(no snapshot)</p>"
    carried = str(man.get("public_key", ""))
    key_arg = " --key " + escape(str(dev.get("key_b64"))) if dev.get("key_b64") else ""
    return f"""<!doctype html><html lang="zh"><head><meta charset="utf-8">
<title>证据摘要 Evidence summary {bundle}</title>
<style>
body{{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC",sans-serif;margin:2em;color:#111}}
h1{{font-size:1.4em}} table{{border-collapse:collapse;margin:.5em 0 1.2em}}
th,td{{border:1px solid #999;padding:4px 8px;text-align:left;font-size:.9em}}
.mono{{font-family:monospace;font-size:.8em;word-break:break-all}}
.ok{{background:#dff3e3}} .bad{{background:#fbe0e0}} .warn{{background:#fff3cd}}
.verdict{{padding:.6em;border:2px solid #555;font-weight:bold}} img{{max-width:100%;border:1px solid #999}}
@media print{{body{{margin:1cm}}}}
</style></head><body>
<h1>施工现场违规证据摘要 / Evidence summary</h1>
<table>
<tr><th>工地 Site</th><td>{escape(config.site_name(site))} ({escape(site)})</td></tr>
<tr><th>设备 Device</th><td>{escape(device)}</td></tr>
<tr><th>类型 Kind</th><td>{escape(str(violation.get("kind") or row.get("kind") or ""))}</td></tr>
<tr><th>说明 Message</th><td>{escape(str(violation.get("message", "")))}</td></tr>
<tr><th>开始 Started</th><td>{when(violation.get("started", ""))}</td></tr>
<tr><th>证据生成 Bundle created</th><td>{when(man.get("created", ""))}</td></tr>
<tr><th>时钟同步 Clock synchronised</th><td>{escape(str(man.get("clock_synchronized")))}</td></tr>
<tr><th>证据包 Bundle</th><td class=mono>{bundle} (seq {escape(str(man.get("seq")))})</td></tr>
</table>
<h2>数据与限值 Figures against the limit</h2>
<table>{fig_rows or "<tr><td>—</td></tr>"}</table>
<h2>抓拍 Snapshot</h2>{img}
<h2>校验 Verification</h2>
<p class="verdict {css}">{escape(verdict)}</p>
<table>
<tr><th>签名密钥 Signing key id</th><td class=mono>{escape(str(man.get("key_id", "")))}</td></tr>
<tr><th>密钥指纹 Key fingerprint (SHA-256)</th><td class=mono>{escape(fingerprint(carried))}</td></tr>
<tr><th>登记密钥 Registered key id</th><td class=mono>{escape(str(dev.get("key_id") or "—"))}</td></tr>
<tr><th>清单哈希 Manifest SHA-256</th><td class=mono>{escape(str(row.get("manifest_hash", "")))}</td></tr>
<tr><th>前一证据哈希 Previous bundle hash</th><td class=mono>{escape(str(man.get("prev_hash", "")))}</td></tr>
<tr><th>证据链 Chain</th><td>{escape(str(row.get("chain") or "—"))}</td></tr>
</table>
<h2>文件 Files</h2>
<table><tr><th>name</th><th>bytes</th><th>SHA-256</th></tr>{file_rows}</table>
<p>复核 To check: <code>edge-agent verify-evidence {bundle}{key_arg}</code></p>
<p class=mono>edge-bureau {__version__}, {datetime.now(tz).strftime("%Y-%m-%d %H:%M:%S %Z")}</p>
</body></html>
"""
