"""The tables ``bench.ladder`` prints (and docs/benchmarks.md holds): plain forwarding and the
ladder side by side, each rung by itself, every viewer, the server's CPU, the rendition profiles.
Each takes the list of run results ``bench.ladder`` makes (its JSON ``results``)."""

from __future__ import annotations

from typing import Any

from . import ladder_stats as stats


def _head(*cells: str) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def viewer_table(results: list[dict[str, Any]]) -> str:
    lines = _head(
        *("run", "viewer", "asked", "fps", "freezes >500 ms (longest ms)"),
        *("latency p50 / p95 ms", "shown in the window", "relay's moves (by reason)"),
        *("video in kbit/s (keyframes, largest)", "bit-exact"),
        *("SSIM at received size / as shown at 720p", "target"),
    )
    for r in results:
        if "error" in r:
            lines.append(f"| {r['run']} | error: {r['error']} |" + " |" * 10)
            continue
        for v in r["viewers"]:
            shown = ", ".join(f"{q} {share:.0%}" for q, share in v["shares"].items()) or "–"
            lines.append(
                f"| {r['run']} | {v['name']} | {v['quality_header'] or '–'} | {v['fps']:.1f} "
                f"| {v['freezes_500']} ({v['longest_gap_ms']:.0f}) "
                f"| {_num(v['latency_p50'])} / {_num(v['latency_p95'])} | {shown} "
                f"| {_moves_cell(v['moves'])} | {v['video_kbps']:.0f} ({v['keyframes']}, "
                f"{v['keyframe_max_bytes'] / 1000:.0f} kB) | {_pct(v['bit_exact'])} "
                f"| {_ssim(v['ssim'])} | {_target(v)} |"
            )
    return "\n".join(lines)


def comparison_table(results: list[dict[str, Any]]) -> str:
    """Plain forwarding and the ladder side by side, per scenario and viewer."""
    runs = {(r["scenario"], r["up_kbps"], r["codec"], r["mode"]): r for r in results}
    lines = _head(
        *("scenario", "viewer"),
        "plain forwarding: fps, freezes > 500 ms (longest), latency p50/p95, shown, SSIM as shown",
        *("ladder (auto): the same", "target"),
    )
    for (scenario, up, codec, mode), ladder in runs.items():
        plain = runs.get((scenario, up, codec, "plain"))
        if mode != "ladder" or plain is None or "error" in plain or "error" in ladder:
            continue
        where = f"uplink {up:g}k" if up else scenario
        for a, b in zip(plain["viewers"], ladder["viewers"], strict=True):
            lines.append(
                f"| {where} {codec} | {a['name']} | {_brief(a)} | {_brief(b)} | {_target(b)} |"
            )
    return "\n".join(lines)


def rung_table(results: list[dict[str, Any]]) -> str:
    """The pinned runs: each rung's picture and its rendition thread's CPU against the target."""
    lines = _head(
        *("run", "quality", "fps", "latency p50 / p95 ms", "video kbit/s (largest keyframe)"),
        *("SSIM at received size / as shown at 720p", "rendition thread, % of a core", "target"),
    )
    for r in results:
        if r["mode"] != "pinned" or "error" in r:
            continue
        for v in r["viewers"]:
            quality = v["name"].removeprefix("pinned ")
            cpu = r["threads"].get(f"rendition {quality}")
            target = stats.TARGET_RUNG_CPU.get(quality)
            verdict = "–"
            if target is not None and cpu is not None:
                verdict = f"{'met' if cpu <= target else 'missed'} (≤ {target:g} %)"
            lines.append(
                f"| {r['run']} | {quality} | {v['fps']:.1f} | {_num(v['latency_p50'])} / "
                f"{_num(v['latency_p95'])} | {v['video_kbps']:.0f} "
                f"({v['keyframe_max_bytes'] / 1000:.0f} kB) | {_ssim(v['ssim'])} "
                f"| {'–' if cpu is None else f'{cpu:g}'} | {verdict} |"
            )
    return "\n".join(lines)


def _brief(v: dict[str, Any]) -> str:
    shown = ", ".join(f"{q} {share:.0%}" for q, share in v["shares"].items()) or "nothing"
    ssim = min((shown_ssim for _, shown_ssim, _ in v["ssim"].values()), default=None)
    return (
        f"{v['fps']:.1f} fps, {v['freezes_500']} ({v['longest_gap_ms'] / 1000:.1f} s), "
        f"{_num(v['latency_p50'])}/{_num(v['latency_p95'])} ms, {shown}"
        + (f", SSIM ≥ {ssim:.3f}" if ssim is not None else "")
    )


def _moves_cell(moves: list[list[Any]]) -> str:
    reasons: dict[str, int] = {}
    for _, _, reason in moves:
        reasons[reason] = reasons.get(reason, 0) + 1
    return f"{len(moves)} ({', '.join(f'{k} {n}' for k, n in reasons.items())})" if moves else "0"


def cpu_table(results: list[dict[str, Any]]) -> str:
    lines = _head(
        *("run", "publisher kbit/s, fps", "server CPU % of a core"),
        *("its threads (% of a core)", "cores busy in the window"),
    )
    for r in results:
        if "error" in r:
            continue
        threads = ", ".join(f"{k} {v:g}" for k, v in r["threads"].items())
        pub = r["publisher"]
        busy = ", ".join(f"{v:.0f} %" for v in r["core_busy_pct"].values())
        lines.append(
            f"| {r['run']} | {pub['kbps']:.0f}, {pub['fps']:.1f} | {_num(r['server_cpu'])} "
            f"| {threads} | {busy} |"
        )
    return "\n".join(lines)


def profile_table(results: list[dict[str, Any]]) -> str:
    lines = _head("run", "thread", "CPU s profiled", "function (own time share, calls)")
    for r in results:
        for name, p in r.get("profiles", {}).items():
            top = "; ".join(f"`{f}` {share:.0%} ({calls})" for f, calls, _, share in p["top"])
            lines.append(f"| {r['run']} | {name} | {p['total_s']:.1f} | {top} |")
    return "\n".join(lines)


def _target(v: dict[str, Any]) -> str:
    if v["down_kbps"]:
        ok = stats.meets_viewer_target(v)
        return f"{'met' if ok else 'missed'} (≥ {stats.TARGET_FPS:g} fps, no freeze > 500 ms)"
    if v["bit_exact"] is not None and "original" in v["shares"]:
        return "bit-exact" if v["bit_exact"] == 1.0 else "missed: not bit-exact"
    return "–"


def _ssim(by_height: dict[int, tuple[float, float, int]]) -> str:
    return "; ".join(f"{h}p {a:.3f} / {b:.3f}" for h, (a, b, _) in by_height.items()) or "–"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"
