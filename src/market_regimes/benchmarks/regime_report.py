"""Summaries and the markdown report of the regime benchmark (``regime_suites``).

Every number in the report is computed from the case results; the closing note compares, per
suite, the project's default and its best variant with the best anchor on the suite's headline
metric and checks the targets given in the suite config (``targets``).
"""

from __future__ import annotations

import json

import numpy as np

from market_regimes.benchmarks.scoring import summarize

LEGEND = {
    "project": "the project's default pipeline: conv autoencoder, jump model on its latents, K by stability, jump penalty 'auto', causal online filter",
    "project_forecast": "the same encoder and latents, K and jump penalty chosen by held-out forecast validation (cluster.selection=forecast, cluster.params.jump_penalty=forecast)",
    "features": "the project's feature-only path (model=features: scaled features of the window's last bar, no autoencoder), default clusterer",
    "features_forecast": "feature-only path with K and jump penalty chosen by held-out forecast validation",
    "market_hmm": "the project's HMM path (experiment=market_hmm): Gaussian HMM (cluster=hmm) on the cross-section of scaled bar log returns (market mode, no autoencoder), K by BIC, causal forward filter",
    "hmm": "Gaussian HMM (hmmlearn, EM, best of 5 starts), labels from the forward filter; K given",
    "jump": "statistical jump model (jumpmodels), labels from its predict_online; penalty chosen by the project's forecast validation; K given",
    "kmeans": "k-means (scikit-learn) on hand-made return/volatility(/breadth) features; K given",
    "wkmeans": "Wasserstein k-means (sorted-window L1 distance, median barycentres), trailing windows; K given",
    "oracle": "forward filter with the true parameters: a ceiling for causal labelling, not a method",
}
HEADLINE = {"two_state": "balanced accuracy (out of sample)", "switching_paths": "total accuracy (out of sample)",
            "multi_asset": "ARI (out of sample)", "real_oos": "R^2 gain of naive+regime over naive (out of sample)"}


def _project_methods(scfg: dict) -> list[str]:
    project = scfg.get("project") or {}
    return list(project.get("variants") or {}) + list(project.get("reselect") or {})


def _anchor_methods(scfg: dict) -> list[str]:
    return [a for a in (scfg.get("anchors") or {}) if a != "oracle"]


def _methods(cases: list[dict]) -> list[str]:
    seen = []
    for c in cases:
        seen += [m for m in c["methods"] if m not in seen]
    return seen


def _get(d: dict, *path):
    """d[path[0]][path[1]]...; None when a key is missing. Regime keys may be ints (fresh) or
    strings (read back from JSON)."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p, d.get(int(p)) if p.isdigit() else None)
    return d


def summarize_suite(name: str, scfg: dict, section: dict) -> dict:
    """Per case group and method: mean, standard error and count over seeds of each metric."""
    if name == "real_oos":
        rows = [{"case": "BTC/ETH/BNB 1h", "method": m, **{k: v for k, v in r.items() if k not in ("reused", "commit")}}
                for m, r in section["methods"].items()]
        return {"rows": rows, **_closing(name, scfg, rows)}
    metrics = {
        "two_state": {"bac_oos": ("out_of_sample", "balanced_accuracy"), "bac_in": ("in_sample", "balanced_accuracy")},
        "switching_paths": {"acc_oos": ("out_of_sample", "accuracy"), "bear_oos": ("out_of_sample", "recall", "1"),
                            "bull_oos": ("out_of_sample", "recall", "0"), "acc_in": ("in_sample", "accuracy"),
                            "bear_in": ("in_sample", "recall", "1"), "bull_in": ("in_sample", "recall", "0")},
        "multi_asset": {"ari_oos": ("out_of_sample", "ari"), "bac_oos": ("out_of_sample", "balanced_accuracy"),
                        "ari_all": ("all", "ari")},
    }[name]
    cases = section["cases"]
    order = {"two_state": [f"T={t}" for t in scfg.get("lengths", [])], "switching_paths": list(scfg.get("models", [])),
             "multi_asset": list(scfg.get("scenarios", []))}[name]  # the config's order, not the names' sort order
    groups = sorted(dict.fromkeys(c["case"] for c in cases), key=lambda g: (order.index(g) if g in order else len(order), g))
    rows = []
    for g in groups:
        sub = [c for c in cases if c["case"] == g]
        for m in _methods(sub):
            res = [c["methods"][m] for c in sub if m in c["methods"]]
            row = {"case": g, "method": m, "n_cases": len(res)}
            for key, path in metrics.items():
                row[key] = summarize([_get(r, *path) for r in res])
            ks = [r["n_regimes"] for r in res]
            row["k_counts"] = {int(k): int(n) for k, n in zip(*np.unique(ks, return_counts=True))}
            if name == "multi_asset":
                row["right_k_share"] = float(np.mean([bool(r["right_k"]) for r in res]))
            row["seconds_mean"] = float(np.mean([r.get("seconds", np.nan) for r in res]))
            rows.append(row)
    return {"rows": rows, **_closing(name, scfg, rows)}


def _score(name: str, row: dict) -> float | None:
    if name == "real_oos":
        a, b = row.get("vol_r2_naive_plus_regime"), row.get("vol_r2_naive")
        return None if a is None or b is None else a - b
    key = {"two_state": "bac_oos", "switching_paths": "acc_oos", "multi_asset": "ari_oos"}[name]
    return row[key]["mean"]


def _closing(name: str, scfg: dict, rows: list[dict]) -> dict:
    """Project default, best project variant and best anchor per case group; targets met or not."""
    project, anchors = _project_methods(scfg), _anchor_methods(scfg)
    notes = []
    for g in dict.fromkeys(r["case"] for r in rows):
        by = {r["method"]: r for r in rows if r["case"] == g}
        score = {m: _score(name, r) for m, r in by.items() if _score(name, r) is not None}
        best_anchor = max((m for m in anchors if m in score), key=score.get, default=None)
        best_project = max((m for m in project if m in score), key=score.get, default=None)
        note = {"case": g, "metric": HEADLINE[name], "default": score.get("project"),
                "best_project": best_project, "best_project_score": score.get(best_project),
                "best_anchor": best_anchor, "best_anchor_score": score.get(best_anchor)}
        note["default_beats_best_anchor"] = (None if note["default"] is None or best_anchor is None
                                             else note["default"] > score[best_anchor])
        note["targets"] = _targets((scfg.get("targets") or {}).get(g) or {}, by, project)
        notes.append(note)
    return {"closing": notes}


def _targets(targets: dict, by: dict, project: list[str]) -> list[dict]:
    """Each target: the metric, the bound, and per project method (variant) whether it is met."""
    out = []
    for metric, bound in targets.items():
        met = {}
        for m, row in by.items():
            if m not in project:
                continue
            value = row.get(metric)
            value = value.get("mean") if isinstance(value, dict) else value
            if value is not None:
                met[m] = {"value": value, "met": bool(value >= bound)}
        out.append({"metric": metric, "bound": bound, "methods": met})
    return out


# ----------------------------------------------------------------------------- markdown
def _fmt(s, pct: bool = False) -> str:
    if s is None:
        return "n/a"
    if isinstance(s, dict):
        if s.get("mean") is None:
            return "n/a"
        m, se = s["mean"], s.get("se")
        if pct:
            return f"{100 * m:.1f} ± {100 * se:.1f}" if se is not None else f"{100 * m:.1f}"
        return f"{m:.3f} ± {se:.3f}" if se is not None else f"{m:.3f}"
    if isinstance(s, float):
        return f"{100 * s:.1f}" if pct else f"{s:.4f}"
    return str(s)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _suite_md(name: str, sec: dict) -> list[str]:
    rows = sec["summary"]["rows"]
    if name == "two_state":
        body = [[r["case"], r["method"], _fmt(r["bac_oos"]), _fmt(r["bac_in"]), str(r["bac_oos"]["n"]),
                 json.dumps(r["k_counts"])] for r in rows]
        return _table(["T", "method", "balanced accuracy, out of sample", "balanced accuracy, in sample",
                       "seeds scored", "K chosen (count)"], body)
    if name == "switching_paths":
        body = [[r["case"], r["method"], _fmt(r["acc_oos"], True), _fmt(r["bear_oos"], True), _fmt(r["bull_oos"], True),
                 _fmt(r["acc_in"], True), _fmt(r["bear_in"], True), _fmt(r["bull_in"], True), str(r["acc_oos"]["n"]),
                 json.dumps(r["k_counts"])] for r in rows]
        return _table(["model", "method", "total % (oos)", "bear % (oos)", "bull % (oos)", "total % (in)",
                       "bear % (in)", "bull % (in)", "paths", "K chosen"], body)
    if name == "multi_asset":
        body = [[r["case"], r["method"], _fmt(r["ari_oos"]), _fmt(r["bac_oos"]), _fmt(r["ari_all"]),
                 f"{100 * r['right_k_share']:.0f} %", str(r["ari_oos"]["n"]), json.dumps(r["k_counts"])] for r in rows]
        return _table(["scenario", "method", "ARI (oos)", "balanced accuracy (oos)", "ARI (all bars)",
                       "right K", "seeds", "K chosen"], body)
    body = [[r["method"], _fmt(r["entropy_rate_nats"]), f"{r['mean_run_length_hours']:.1f}", _fmt(r["stability_ari"]),
             _fmt(r["vol_r2_regime"]), _fmt(r["vol_r2_naive"]), _fmt(r["vol_r2_naive_plus_regime"]),
             _fmt(r["brier_regime"]), _fmt(r["brier_base_rate"]), str(r["n_regimes_per_fold"])] for r in rows]
    return _table(["method", "entropy rate (nats/bar)", "mean run (h)", "stability ARI", "vol R^2 regime",
                   "vol R^2 naive", "vol R^2 naive+regime", "Brier P(up)", "Brier base rate", "K per fold"], body)


TITLES = {"two_state": "1. Two-state daily simulation (Hardy parameters)",
          "switching_paths": "2. Regime-switching gBm and Merton paths (Horvath, Issa and Muguruza 2021)",
          "multi_asset": "3. Multi-asset synthetic markets (the project's generator)",
          "real_oos": "4. Real data out of sample (BTC/ETH/BNB hourly, walk-forward)"}


def render(report: dict) -> str:
    """The markdown report: how it was produced, one table per suite, the closing note."""
    m, v = report["machine"], report["versions"]
    lines = ["# Regime benchmark", "",
             "Generated by the command below from `market_regimes.benchmarks.regime_suites`; every number is "
             "measured in that run (report JSON: `docs/benchmarks.json`).", "",
             f"    {report['command']}", "",
             f"- date: {m.get('date')}; commit {m.get('commit')}; runtime {report.get('seconds', 'n/a')} s",
             f"- machine: {m.get('cpu_model')}, {m.get('cpu_cores')} cores, load average {m.get('load_average')} at the start, "
             f"{m.get('load_average_end', 'n/a')} at the end",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             "- results computed at commit(s): " + _commits(report),
             *([f"- results reused from earlier runs (`suite.resume`): {', '.join(report['resumed_from'])}"]
               if report.get("resumed_from") else []), "",
             "Methods:", ""]
    present = {meth for s in report["suites"].values() for r in s["summary"]["rows"] for meth in [r["method"]]}
    lines += [f"- `{k}`: {text}" for k, text in LEGEND.items() if k in present] + [""]
    for name, sec in report["suites"].items():
        cfg = sec["config"]
        lines += [f"## {TITLES[name]}", "", _protocol(name, cfg) + _coverage(name, cfg, sec), ""]
        lines += _suite_md(name, sec) + ["", _runtime(sec), ""]
    lines += ["## Closing note: project vs best anchor", ""]
    for name, sec in report["suites"].items():
        for n in sec["summary"]["closing"]:
            d, bp, ba = n["default"], n["best_project"], n["best_anchor"]
            lines.append(f"- {TITLES[name].split(' ', 1)[1]} [{n['case']}], {n['metric']}: project default "
                         f"{_fmt(d)}, best project variant `{bp}` {_fmt(n['best_project_score'])}, best anchor "
                         f"`{ba}` {_fmt(n['best_anchor_score'])} -> default "
                         f"{'beats' if n['default_beats_best_anchor'] else 'does not beat'} the best anchor.")
            for t in n["targets"]:
                met = ", ".join(f"`{k}` {_fmt(x['value'])} {'met' if x['met'] else 'missed'}" for k, x in t["methods"].items())
                lines.append(f"  - target {t['metric']} >= {t['bound']}: {met}")
    return "\n".join(lines) + "\n"


def _runtime(sec: dict) -> str:
    text = f"Suite runtime: {sec.get('seconds')} s in this run"
    if sec.get("n_reused"):
        text += (f"; {sec.get('n_computed', 0)} results computed here and {sec['n_reused']} reused from an earlier run "
                 f"(`suite.resume`)")
    if sec.get("compute_seconds") is not None:
        text += f"; computing every result took {sec['compute_seconds']} s of worker time in all"
    return text + "."


def _commits(report: dict) -> str:
    """Each commit behind the results (cases reused from an earlier run keep theirs) and how many results it gave."""
    counts: dict[str, int] = {}
    for sec in report["suites"].values():
        rows = sec.get("cases") or list((sec.get("methods") or {}).values())
        for r in rows:
            c = str(r.get("commit") or "unknown")
            counts[c] = counts.get(c, 0) + 1
    return ", ".join(f"{c} ({n})" for c, n in sorted(counts.items())) or "none"


def _coverage(name: str, cfg: dict, sec: dict) -> str:
    """A warning when the section holds fewer cases than its config asks for (an unfinished run)."""
    from market_regimes.benchmarks.regime_suites import seeds

    groups = {"two_state": "lengths", "switching_paths": "models", "multi_asset": "scenarios"}
    if name not in groups:
        return ""
    expected = len(seeds(cfg["seeds"])) * len(cfg[groups[name]])
    present = len(sec.get("cases") or [])
    if present >= expected:
        return ""
    return (f" **Incomplete: {present} of the {expected} configured cases are in this report**; the counts in "
            "the tables say how many each figure averages.")


def _protocol(name: str, cfg: dict) -> str:
    from market_regimes.benchmarks.regime_suites import seeds

    s = seeds(cfg["seeds"]) if "seeds" in cfg else []
    seed_text = f"seeds {s[0]}..{s[-1]} ({len(s)})" if s else ""
    project = cfg.get("project") or {}
    shared = " ".join(project.get("overrides") or []) or "(none)"
    variants = "; ".join(f"`{k}`: {' '.join(x or []) or 'defaults'}" for k, x in (project.get("variants") or {}).items())
    if name == "two_state":
        head = (f"T = {cfg['lengths']} training days followed by {cfg['n_test']} test days; {seed_text}. Every method is "
                "fitted on the first T days and labels every day causally; scored out of sample on the test days and in "
                "sample on the training days from the first day every method labels. Seeds whose scored days hold one "
                "regime only are left out of the balanced accuracy.")
    elif name == "switching_paths":
        p = cfg["path"]
        head = (f"{p['years']} years of 252 x {p['steps_per_day']} steps, {p['n_episodes']} bear episodes of "
                f"{p['episode_years']} years at random positions; {seed_text} per model. Fitted on the first "
                f"{cfg['fit_fraction']:.0%} of each path, scored out of sample on the rest and in sample on the fitted part.")
    elif name == "multi_asset":
        head = (f"Scenarios {cfg['scenarios']}, {seed_text} each; the project's synthetic data config, training period "
                "= the window config's (first 70 %), scored after it (out of sample) and on all labelled bars.")
    else:
        head = ("Walk-forward folds of `run_walk_forward`; anchors on the same folds with the same evaluation functions, "
                f"K = {cfg.get('anchor_regimes', 3)} for the anchors.")
    return head + f" Project overrides shared by every variant: `{shared}`; variants: {variants}."
