"""The perf suite's report: targets checked against the measured numbers, and the markdown."""

from __future__ import annotations

import statistics

LINEAR_GROWTH = 2.4  # a doubling that costs at most 2.4x (20 % above 2x) counts as linear


def _get(report: dict, *path, default=None):
    node = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def targets(report: dict) -> list[dict]:
    """One row per target of the issue: what was measured and whether it meets the target."""
    rows = []

    def add(target: str, measured: str, ok: bool | None):
        rows.append({"target": target, "measured": measured, "ok": ok})

    prep = report.get("prep")
    if prep:
        fw, d, ref = prep["features_windows"], prep["derived"], prep["reference"]
        add("features + windows of the file < 10 s", f"{fw['features_windows_s']:.2f} s "
            f"(features {fw['features_s']:.2f} s, windows {fw['windows_s']:.2f} s)", fw["features_windows_s"] < 10)
        measured = d.get("speedup_measured", d.get("speedup_on_slice"))
        if ref.get("whole_panel"):
            add(">= 50x faster than the pandas-loop version", f"{measured:.0f}x measured on the whole file "
                f"({ref['reference_s']:.0f} s vs {ref['project_s']:.2f} s in the same process)", measured >= 50)
        else:
            add(">= 50x faster than the pandas-loop version",
                f"{d['speedup_full_estimate']:.0f}x on the whole file (reference extrapolated from "
                f"{ref['slice_bars']} bars); {measured:.0f}x measured on that slice",
                d["speedup_full_estimate"] >= 50)
        same = (ref["same_names"] and ref["same_window_keys"] and ref["valid_mismatches"] == 0
                and ref["feature_max_rel_diff"] < 1e-6 and ref["window_max_abs_diff"] < 1e-5)
        add("same values as the reference", f"features max rel. diff {ref['feature_max_rel_diff']:.1e}, "
            f"windows max abs. diff {ref['window_max_abs_diff']:.1e}, validity and window keys "
            f"{'identical' if ref['valid_mismatches'] == 0 and ref['same_window_keys'] else 'DIFFER'}", same)
        add("peak RSS < 3x the scaled feature panel", f"{d['own_over_scaled_panel']:.2f}x for the stage's own "
            f"memory ({d['stage_own_mb']:.0f} MB over {fw['scaled_panel_mb']:.0f} MB); whole process "
            f"{d['process_over_scaled_panel']:.2f}x ({fw['peak_rss_mb']:.0f} MB, with interpreter and input panel)",
            d["own_over_scaled_panel"] < 3)
    tr = report.get("training")
    if tr:
        cpu = tr["cpu"]
        add("Lightning overhead vs bare loop <= 10 % (CPU)", f"{100 * cpu['overhead']:+.1f} % "
            f"({cpu['lightning']['windows_per_s']:.0f} vs {cpu['bare']['windows_per_s']:.0f} windows/s)",
            cpu["overhead"] <= 0.10)
        gpu = tr.get("cuda")
        add("GPU path (bf16-mixed, pinned memory)", "no GPU on this machine; code path in "
            "market_regimes.benchmarks.throughput" if gpu is None else
            f"{100 * gpu['overhead']:+.1f} % ({gpu['lightning']['windows_per_s']:.0f} vs "
            f"{gpu['bare']['windows_per_s']:.0f} windows/s)", None if gpu is None else gpu["overhead"] <= 0.10)
    sc = report.get("scale")
    if sc:
        main = sc["sizes"][0]
        size = f"{main['n_assets']} assets x {main['n_bars']} bars"
        add(f"{size}: peak RSS <= 16 GB", f"{main['peak_rss_mb'] / 1024:.1f} GB (largest stage)",
            main["peak_rss_mb"] <= 16 * 1024)
        add(f"{size}: end to end < 30 min", f"{main['total_s'] / 60:.1f} min (sum of stages)", main["total_s"] < 1800)
        worst = max(((g, s, v) for g, stages in sc["growth"].items() for s, v in stages.items() if ":" not in s),
                    key=lambda x: x[2], default=None)
        if worst:
            add("each stage grows linearly", f"largest growth {worst[2]:.2f}x ({worst[1]}, {worst[0]})",
                worst[2] <= LINEAR_GROWTH)
    inf = report.get("inference")
    if inf:
        add("infer_latest.py process < 3 s", f"{inf['process']['process_s']:.2f} s", inf["process"]["process_s"] < 3)
        call = inf["call"]
        add("inference call < 50 ms", f"{call['call_ms']:.0f} ms (features {call['tail_features_ms']:.0f} ms, "
            f"labelling {call['labelling_ms']:.0f} ms)", call["call_ms"] < 50)
    wf = report.get("walk_forward")
    if wf:
        r = wf["run"]
        add("walk-forward wall time (no target: reported)", f"{r['walk_forward_s'] / 60:.1f} min for {r['n_folds']} "
            f"folds, peak RSS {_mb(r['peak_rss_mb'])}", None)
    return rows


def _ok(ok) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render(report: dict) -> str:
    """The markdown report (docs/PERFORMANCE.md)."""
    m = report["machine"]
    lines = [
        "# Performance and scale", "",
        f"Written by `{report['command']}` on {m['date']} (commit {m['commit']}). Every stage ran in "
        f"{'a fresh process' if report['suite'].get('isolate') else 'the benchmark process'}; figures are "
        f"medians of {report['suite'].get('repeats')} runs unless a row says otherwise.", "",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gb']} GB RAM; Python {m['python']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), numpy {m['numpy']}, pandas {m['pandas']}; "
        f"GPU: {m['cuda'] or 'none'}. Load average (1/5/15 min) at the start {m['load_average']}, at the end "
        f"{m.get('load_average_end', 'n/a')}; CPU time taken by the hypervisor for other guests (steal) during "
        f"the run: {_pct(m.get('steal_share'))}. Other jobs share this machine, so a load well above 0 or a "
        "steal of more than a few % means slower and noisier figures; re-run the command on a quiet machine "
        "to refresh them.", "",
        "Environment of the benchmark and its stage processes (this run): "
        + (", ".join(f"`{k}={v}`" for k, v in (report["suite"].get("env") or {}).items()) or "unchanged")
        + " (why: config/suite/perf.yaml).", "",
    ]
    prov = report.get("provenance") or {}
    if len({(v["run"]) for v in prov.values()}) > 1:  # sections measured in different runs
        lines += ["Sections come from these runs (`suite.merge_from`):", ""]
        lines += _table(["section", "run", "date", "commit", "load average at its start", "steal", "environment"],
                        [[k, f"`{v['run']}`", v["date"], v["commit"], v["load_average"], _pct(v.get("steal_share")),
                          ", ".join(f"`{a}={b}`" for a, b in (v.get("env") or {}).items()) or "unchanged"]
                         for k, v in prov.items()])
        lines += [""]
    lines += ["## Targets", ""]
    lines += _table(["target", "measured", "met"], [[t["target"], t["measured"], _ok(t["ok"])]
                                                   for t in report.get("targets", [])])
    for name, fn in (("prep", _prep), ("training", _training), ("scale", _scale), ("inference", _inference),
                     ("walk_forward", _walk_forward)):
        if report.get(name):
            lines += ["", *fn(report[name])]
    lines += ["", "## Reproduce", "", "```bash", report["command"],
              "python scripts/benchmark.py suite=perf_quick      # the reduced version CI runs", "```", "",
              "Results are written to `artifacts/runs/benchmark/<time>/` (`report.json`, `PERFORMANCE.md`); the "
              "full suite also copies the markdown here.", ""]
    return "\n".join(lines)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _mb(x: float) -> str:
    return f"{x:,.0f} MB"


def _prep(p: dict) -> list[str]:
    load, fw, pr, ref, d = p["load"], p["features_windows"], p["prepare"], p["reference"], p["derived"]
    src = p["data"].get("path") or f"synthetic {p['data'].get('n_assets')} assets x {p['data'].get('n_bars')} bars"
    lines = ["## 1. Features + windows", "",
             f"Data: `{src}`: {load['n_assets']} assets x {load['n_bars']:,} bars ({load['asset_bars']:,} asset-bars), "
             f"{fw['n_features']} features ({fw['n_inputs']} model inputs), {fw['n_windows']:,} windows of "
             f"{p['window'].get('length')} bars. Scaled feature panel `WindowSet.X`: {_mb(fw['scaled_panel_mb'])}; "
             f"unscaled features: {_mb(fw['features_mb'])}.", ""]
    lines += _table(["stage (process)", "wall", "peak RSS", "notes"], [
        ["load file -> panel (`load_market`)", f"{load['load_s']:.2f} s", _mb(load["peak_rss_mb"]), ""],
        ["features + windows from the panel", f"{fw['features_windows_s']:.2f} s", _mb(fw["peak_rss_mb"]),
         f"features {fw['features_s']:.2f} s, windows {fw['windows_s']:.2f} s; RSS with the panel loaded "
         f"{_mb(fw['rss_inputs_mb'])}, so the stage's own peak is {_mb(d['stage_own_mb'])} = "
         f"{d['own_over_scaled_panel']:.2f}x the scaled panel ({d['process_over_scaled_panel']:.2f}x for the whole process)"],
        ["load + features + windows in one process (as `prepare_data.py`)", f"{pr['total_s']:.2f} s",
         _mb(pr["peak_rss_mb"]), f"load {pr['load_s']:.2f} s, features {pr['features_s']:.2f} s, "
                                 f"windows {pr['windows_s']:.2f} s"],
    ])
    measured = d.get("speedup_measured", d.get("speedup_on_slice"))
    where = "the whole file" if ref.get("whole_panel") else f"the last {ref['slice_bars']:,} bars"
    runs = ref.get("repeats", 1)
    lines += ["", f"Pandas-loop reference (`market_regimes/benchmarks/reference.py`) on {where} "
              f"({ref['asset_bars']:,} asset-bars, {ref['n_windows']:,} windows; "
              f"{'one run' if runs == 1 else f'median of {runs} runs'}): features "
              f"{ref['reference_features_s']:.2f} s (of which the per-bar correlation loop "
              f"{ref['reference_corr_loop_s']:.2f} s), windows by `get_loc` {ref['reference_windows_s']:.2f} s "
              f"(checked against the project's in chunks, the check not counted); the project's path on the same "
              f"data in the same process {ref['project_s']:.2f} s: **{measured:.0f}x** measured."]
    if not ref.get("whole_panel"):
        lines[-1] += (f" On the whole file the reference was not run: scaling its feature time by bars and its "
                      f"window time by windows gives ~{d['reference_full_estimate_s']:.0f} s, "
                      f"**{d['speedup_full_estimate']:.0f}x** the project's {fw['features_windows_s']:.2f} s "
                      "(an extrapolation).")
    lines += ["", f"Same numbers on {where}: feature names and order {'equal' if ref['same_names'] else 'DIFFER'}, "
              f"validity mismatches {ref['valid_mismatches']}, largest feature difference "
              f"{ref['feature_max_rel_diff']:.1e} (relative, |a-b|/(1+|b|), float32 storage), window keys "
              f"{'equal' if ref['same_window_keys'] else 'DIFFER'}, largest scaled-window difference "
              f"{ref['window_max_abs_diff']:.1e}."]
    return lines


def _training(t: dict) -> list[str]:
    lines = ["## 2. Training throughput", "",
             f"Same `RegimeAutoencoder` (config/model), batches of {t['batch_size']} windows with their temporal "
             f"positives gathered beforehand by `WindowDataset`, AdamW, gradient clipping and determinism as "
             f"config/trainer/cpu.yaml ({t['trainer'].get('precision')}, deterministic={t['trainer'].get('deterministic')}); "
             f"{t['steps']} steps of which the first {t['warmup']} are not timed. Lightning runs lean: no progress "
             "bar, no checkpointing, logger off, no model summary, no sanity or validation steps. `datamodule` is "
             "Lightning with the project's `WindowDataModule` gathering each batch while it trains.", ""]
    rows = []
    for device in ("cpu", "cuda"):
        r = t.get(device)
        if r is None:
            rows.append([device, "no GPU on this machine", "", "", ""])
            continue
        for loop in ("bare", "lightning", "datamodule"):
            x = r[loop]
            rel = x["windows_per_s"] / r["bare"]["windows_per_s"]
            rows.append([device, loop, f"{x['windows_per_s']:,.0f}", f"{x['ms_per_step']:.1f}", f"{rel:.2f}"])
        rows.append([device, "Lightning overhead", "", "", f"{100 * r['overhead']:+.1f} %"])
    lines += _table(["device", "loop", "windows/s", "ms/step", "vs bare"], rows)
    for device in ("cpu", "cuda"):
        enc = t.get(f"encode_{device}")
        if enc:
            per = enc["us_per_window"]
            lines += ["", f"Encoding ({device}, `market_regimes.model.networks.encode`, eval mode, no gradients) of "
                      f"{enc['n_windows']:,} windows, by windows per forward pass (median of rounds; the default on "
                      f"this device is {enc['default_pass']}):", ""]
            lines += _table(["windows per pass"] + list(per), [["us per window"] + [f"{v:.1f}" for v in per.values()]])
    lines += ["", "GPU path (`market_regimes/benchmarks/throughput.py`, used when `torch.cuda.is_available()`): "
              "`precision=bf16-mixed` (bare loop: `torch.autocast('cuda', torch.bfloat16)`), batches in pinned "
              "memory, copied with `non_blocking=True`, clock read after `torch.cuda.synchronize()`; training "
              "itself: `python scripts/train.py trainer=gpu` (the datamodule pins memory on a GPU)."]
    return lines


def _spread(values: list[float]) -> str:
    """``median (min-max)`` of sorted values."""
    return f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})"


def _scale(s: dict) -> list[str]:
    lines = ["## 3. Scale", "",
             f"Synthetic market (`simulate_market`, volatility scenario), hourly bars; stages in fresh processes "
             f"handing their outputs on through files, so a stage's peak RSS includes its inputs. Training: one "
             f"epoch of {s['windows_per_epoch']:,} random windows (`train.windows_per_epoch`), validated on as many "
             f"validation windows. Clustering: `{s['cluster'].get('name')}` with K chosen as configured, fitted on the "
             f"training sequences of a random subset of assets holding about {s['fit_rows']:,} windows (a subsample: "
             f"fitting on all of them is not what this measures), then every window labelled with `predict_online`.", ""]
    runs = s.get("runs")
    if runs:  # reports before the runs were recorded say nothing here
        lines += [f"Runs per stage and size (medians): {runs['short']} for data, features, windows and train, "
                  f"{runs['long']} for encode and cluster" + (", a stage's runs going round the sizes in turn so that "
                  "a slow spell of the machine falls on every size alike." if runs.get("interleaved") else "."), ""]
    if s.get("warm_memory_mb"):
        stage_runs = [r for size in s["sizes"] for st in size["stages"].values() for r in st["runs"]]
        slow, typical = (sorted(r[k] for r in stage_runs) for k in ("warm_gbps_slowest", "warm_gbps_median"))
        lines += [f"In every stage's process, after its imports and before its clock starts, "
                  f"{_mb(s['warm_memory_mb'])} of memory were written and freed (`suite.scale.warm_memory_mb`, "
                  f"`measure.warm_memory`), and the peak RSS reset after it: on a virtual machine whose host backs "
                  f"memory lazily, a first touch of memory unused for a while costs several times more, which "
                  f"would make a larger size grow through the host rather than the code. First-touch rate of that "
                  f"memory over the {len(stage_runs)} stage runs: {_spread(typical)} GB/s (median chunk of a run), "
                  f"slowest chunk {_spread(slow)} GB/s.", ""]
    names = list(s["sizes"][0]["stages"])
    header = ["assets x bars (asset-bars)"] + names + ["total", "peak RSS"]
    rows = []
    for size in s["sizes"]:
        st = size["stages"]
        rows.append([f"{size['n_assets']} x {size['n_bars']:,} ({size['n_assets'] * size['n_bars'] / 1e6:.1f} M)"]
                    + [f"{st[n]['wall_s']:.1f} s / {st[n]['peak_rss_mb'] / 1024:.1f} GB" for n in names]
                    + [f"{size['total_s'] / 60:.1f} min", f"{size['peak_rss_mb'] / 1024:.1f} GB"])
    lines += _table(header, rows)
    if s["growth"]:
        cols = list(next(iter(s["growth"].values())))
        lines += ["", "Growth of wall time when the data doubles (2.0 = linear; `stage: part` columns split a "
                  "stage whose parts grow differently, e.g. the clusterer's fit on a fixed-size subsample):", ""]
        lines += _table(["doubling"] + cols, [[g] + [f"{v[c]:.2f}" for c in cols] for g, v in s["growth"].items()])
    if s.get("heap"):
        h, f = s["heap"]["half"], s["heap"]["full"]
        lines += ["", f"Memory of encoding: `training.encode_windows` over {h['n_windows']:,} and {f['n_windows']:,} windows "
                  f"grew the resident memory by {h['rss_growth_mb']:.0f} and {f['rss_growth_mb']:.0f} MB, of which its "
                  f"output is {h['output_per_window_kb']:.2f} KB per window (glibc's default allocator settings); "
                  "what grows beyond the output when the windows double is heap the allocator keeps per window."]
    main = s["sizes"][0]["stages"]
    tr, enc, cl = main["train"], main["encode"], main["cluster"]
    lines += ["", f"Largest size, details: simulate {main['data']['simulate_s']:.1f} s + panel "
              f"{main['data']['panel_s']:.1f} s; {main['windows']['n_windows']:,} windows "
              f"({main['windows']['scaled_panel_mb']:,.0f} MB scaled panel); training epoch {tr['train_epoch_s']:.1f} s, "
              f"validation on {tr['val_windows']:,} windows {tr['val_s']:.1f} s (the train job validates on all "
              f"{tr['n_val_windows']:,} validation windows every epoch: ~{tr['val_all_estimate_s']:.0f} s at this rate); "
              f"encoding {enc['windows_per_s']:,.0f} windows/s; clustering fit {cl['fit_s']:.1f} s on "
              f"{cl['fit_rows']:,} windows of {cl['fit_assets']} assets, `predict_online` of "
              f"{cl['n_labelled']:,} windows {cl['predict_s']:.1f} s (K = {cl['n_regimes']})."]
    return lines


def _inference(i: dict) -> list[str]:
    c, p = i["call"], i["process"]
    return ["## 4. Inference latency", "",
            f"Bundle trained by the train job with `{' '.join(i['overrides'])}` ({i['bundle_train_s']:.0f} s), asset "
            f"{i['asset']}, {c['n_bars']:,} bars of history.", ""] + _table(["what", "median"], [
        ["`infer_latest.py --asset ... --json`, whole process", f"{p['process_s']:.2f} s "
                                                                 f"(runs: {', '.join(f'{x:.2f}' for x in p['process_runs_s'])})"],
        ["`infer(bundle, market, asset)` in process", f"{c['call_ms']:.1f} ms"],
        [f"... recomputing features over the tail ({c['tail_bars']} bars + slack)", f"{c['tail_features_ms']:.1f} ms"],
        ["... encoding and labelling", f"{c['labelling_ms']:.1f} ms"],
        ["features over the whole history instead (before the tail)", f"{c['full_history_features_ms']:.1f} ms"],
        ["loading the bundle and the data (once per process)", f"{c['setup_s']:.2f} s"],
    ])


def _walk_forward(w: dict) -> list[str]:
    r = w["run"]
    return ["## 5. Walk-forward validation", "",
            f"`python scripts/walk_forward_validate.py {' '.join(w['overrides'])}`: training from {r['train_start']}, "
            f"first training end {r['first_train_end']}, test through {r['test_end']}; {r['n_folds']} folds, "
            f"regimes per fold {r['n_regimes']}.", ""] + _table(["what", "value"], [
        ["whole job (data, features, every fold's refit, labelling, drift, report)", f"{r['walk_forward_s'] / 60:.1f} min"],
        ["per fold", ", ".join(f"{x:.0f} s" for x in r["fold_s"])],
        ["peak RSS", _mb(r["peak_rss_mb"])],
    ])
