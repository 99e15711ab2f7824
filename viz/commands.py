"""viz's command implementations behind its parser (viz.cli), imported only when one of them runs."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from brivl.commands import load_model
from brivl.errors import InputError
from brivl.eval.backbone import TextBackboneModel
from brivl.hub import load
from brivl.images import load_image
from brivl.twotower import HasTextBackbone, model_name

from . import compare, figures, network
from . import phrases as P
from . import phrase_map as M
from .figures import check_channels, save_png, write_json
from .figures_all import regenerate_all
from .settings import FIGURES, LIMITS, RenderSettings
from .vqgan import load_vqgan
from .vqgan_inversion import parse_prompt, vqgan_imagine
from .vqgan_inversion import prompts as weighted_prompts


def _check_render_args(args: argparse.Namespace) -> None:
    """Refuse settings the render loop cannot use (viz.settings.LIMITS, as the studio's), before loading a model."""
    given = {k: getattr(args, k) for k in ("steps", "size", "seed", "lr", "param", "decorrelate") if hasattr(args, k)}
    RenderSettings.checked(LIMITS, prefix="--", error=InputError, **given)
    output = getattr(args, "output", None)
    if output is not None and Path(output).suffix.lower() != ".png":
        raise InputError(f"{output}: the image is written as PNG; give a path ending in .png")


def _render_settings(args: argparse.Namespace) -> dict:
    return {"steps": args.steps, "size": args.size, "seed": args.seed, "param": args.param,
            "decorrelate": args.decorrelate, "lr": args.lr}


def _write_render(args: argparse.Namespace, model, result, settings: dict, seconds: float) -> None:
    """Write the image as a PNG at args.output and every setting to a JSON beside it."""
    out = Path(args.output)
    save_png(result.images[0], out)
    side = int(result.images.shape[-1])
    info = {"command": args.command, "model": args.model, "model_name": model_name(model), **settings,
            "size": side, "transforms": "standard", "final_objective": result.history[-1, 0].item(),
            "time_s": round(seconds, 3), "device": args.device, "torch": torch.__version__, "image": out.name}
    meta = write_json(info, out.with_suffix(".json"))
    print(f"wrote {out} ({side}x{side}) and {meta}")


def _check_text(text: str | None, what: str) -> None:
    if text is not None and not text.strip():
        raise InputError(f"{what} is empty or only whitespace; give it some words")


def _vqgan_defaults(args: argparse.Namespace) -> None:
    """Fill --steps/--size/--lr left unset: VQGAN inversion's own defaults, else network visualisation's."""
    vq = getattr(args, "vqgan", None) is not None
    if args.steps is None:
        args.steps = 100 if vq else 128
    if args.lr is None:
        args.lr = (0.1 if args.tokens == "z" else 0.5) if vq else 0.05
    if vq and args.size is None:
        args.size = 256


def _vqgan_prompts(args: argparse.Namespace) -> list[tuple[str, float]]:
    return weighted_prompts([parse_prompt(t) for t in args.text.split(" | ")], args.negative)


def _load_vqgan(args: argparse.Namespace):
    return load_vqgan(args.vqgan, args.vqgan_yaml, device=args.device)


def _imagine_vqgan(args: argparse.Namespace) -> int:
    """VQGAN inversion of one (weighted, multi-part) text."""
    if args.cutn < 1 or not args.cut_pow > 0:
        raise InputError(f"--cutn must be >= 1 and --cut-pow > 0, got {args.cutn}, {args.cut_pow}")
    pairs = _vqgan_prompts(args)
    model, vqgan = load_model(args), _load_vqgan(args)
    init = None
    if args.init_image:
        init = load_image(args.init_image)
    t0 = time.perf_counter()
    result = vqgan_imagine(model, vqgan, pairs, steps=args.steps, size=args.size, lr=args.lr, seed=args.seed,
                           param=args.tokens, cutn=args.cutn, cut_pow=args.cut_pow, init=init, progress=True)
    seconds = time.perf_counter() - t0
    out = Path(args.output)
    save_png(result.images[0], out)
    h, w = result.images.shape[-2:]
    info = {"command": "imagine", "method": "vqgan-inversion", "model": args.model, "model_name": model_name(model),
            "vqgan": str(args.vqgan), "vqgan_name": vqgan.config.name, "prompts": pairs, "steps": args.steps,
            "size": [int(h), int(w)], "seed": args.seed, "lr": args.lr, "tokens": args.tokens, "cutn": args.cutn,
            "cut_pow": args.cut_pow, "init_image": args.init_image, "final_cosine": result.history[-1, 0].item(),
            "first_cosine": result.history[0, 0].item(), "time_s": round(seconds, 3), "device": args.device,
            "torch": torch.__version__, "image": out.name}
    meta = write_json(info, out.with_suffix(".json"))
    print(f"wrote {out} ({w}x{h}) and {meta}")
    return 0


def cmd_imagine(args: argparse.Namespace) -> int:
    """Network visualisation of one text, or VQGAN inversion with --vqgan."""
    if args.text is None:  # `brivl imagine "a text"`: the one positional is the text
        args.model, args.text = "brivl-lite", args.model
    _check_text(args.text, "the text")
    _vqgan_defaults(args)
    _check_render_args(args)
    if args.vqgan is not None:
        return _imagine_vqgan(args)
    model = load_model(args)
    settings = {"text": args.text, **_render_settings(args)}
    t0 = time.perf_counter()
    result = network.imagine(model, args.text, **_render_settings(args), progress=True)
    _write_render(args, model, result, settings, time.perf_counter() - t0)
    return 0


def cmd_neuron(args: argparse.Namespace) -> int:
    """Neuron visualisation of one channel, under an optional text."""
    _check_text(args.text, "--text")
    _check_render_args(args)
    model = load_model(args)
    check_channels(model, args.layer, [args.channel])  # ChannelError (a UserInputError) names the valid range
    settings = {"layer": args.layer, "channel": args.channel, "text": args.text, "text_weight": args.text_weight,
                **_render_settings(args)}
    t0 = time.perf_counter()
    result = network.neuron(model, args.layer, args.channel, args.text, text_weight=args.text_weight,
                            **_render_settings(args), progress=True)
    _write_render(args, model, result, settings, time.perf_counter() - t0)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """`brivl figures` without a figure: say which there are."""
    raise InputError("name a figure (e.g. `brivl figures fig2 --out figs/`) or all of them: "
                     "`brivl figures all --out DIR`")


def cmd_fig2(args: argparse.Namespace) -> int:
    """Fig. 2: network and neuron visualisation."""
    _check_render_args(args)
    model = load_model(args)
    try:
        info = figures.fig2(model, args.out, steps=args.steps, size=args.size, seed=args.seed, param=args.param,
                            decorrelate=args.decorrelate, lr=args.lr, channels=args.channels,
                            text_weight=args.text_weight, model_name=args.model, progress=True)
    except figures.ChannelError as e:
        raise InputError(f"{e} (set them with --channels)") from None
    print(f"wrote {Path(args.out) / info['files']['grid']} and fig2.json ({info['time_s']:.1f} s)")
    return 0


def cmd_figures_all(args: argparse.Namespace) -> int:
    """`brivl figures all`: load the model, regenerate every figure, print where the index is (1 if one failed)."""
    if not args.out:
        raise InputError("figures all needs --out DIR (the folder for the figures and index.html)")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.size is not None:
        RenderSettings.checked(LIMITS, prefix="--", error=InputError, size=args.size)
    if args.phrase_limit is not None and args.phrase_limit < 30:
        raise InputError(f"--phrase-limit must be at least 30 (Fig. 5c shows 30 phrases), got {args.phrase_limit}")
    if args.only and any(o not in FIGURES for o in args.only):
        raise InputError(f"--only takes {', '.join(FIGURES)}; got {' '.join(args.only)}")
    model = load(args.model, device=args.device)
    summary = regenerate_all(model, args.out, model_name=args.model, steps=args.steps, size=args.size,
                             seed=args.seed, phrase_limit=args.phrase_limit, only=args.only, progress=True)
    failed = [f["figure"] for f in summary["figures"] if not f["ok"]]
    print(f"wrote {Path(args.out) / 'index.html'} ({len(summary['figures']) - len(failed)} of "
          f"{len(summary['figures'])} figures, {summary['time_s']:.0f} s)"
          + (f"; not regenerated: {', '.join(failed)} (see index.html)" if failed else ""))
    return 1 if failed else 0


def cmd_fig3(args: argparse.Namespace) -> int:
    """Fig. 3 by VQGAN inversion, with an optional CLIP-style model for panel a."""
    _vqgan_defaults(args)
    _check_render_args(args)
    if args.cutn < 1 or not args.cut_pow > 0:
        raise InputError(f"--cutn must be >= 1 and --cut-pow > 0, got {args.cutn}, {args.cut_pow}")
    prompts = None
    if args.prompts:
        try:
            prompts = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{args.prompts}: not a readable JSON file of {{panel: [texts]}}: {e}") from None
        if not isinstance(prompts, dict) or not all(isinstance(v, list) and v for v in prompts.values()):
            raise InputError(f"{args.prompts}: expected {{panel: [texts]}} with panels a-d")
        for texts in prompts.values():
            for t in texts:
                _check_text(t, "a prompt")
    model, vqgan = load_model(args), _load_vqgan(args)
    compare = None if args.compare == "none" else load_model(args, args.compare)
    info = figures.fig3(model, vqgan, args.out, compare=compare, model_name=args.model,
                        compare_name=None if compare is None else args.compare, prompts=prompts,
                        steps=args.steps, size=args.size, seed=args.seed, lr=args.lr, tokens=args.tokens,
                        cutn=args.cutn, cut_pow=args.cut_pow, progress=True)
    print(f"wrote {Path(args.out) / 'fig3.png'} and fig3.json ({info['time_s']:.1f} s)")
    return 0


def _check_phrase_args(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if getattr(args, "k", 1) < 1:
        raise InputError(f"-k must be at least 1, got {args.k}")
    if args.phrases != "jieba" and not Path(args.phrases).is_file():
        raise InputError(f"{args.phrases}: no such phrase file (one phrase per line), and not 'jieba'")
    plot = getattr(args, "plot", None)
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise InputError(f"{plot}: the plot is written as PNG; give a path ending in .png")


def _phrase_index(args: argparse.Namespace, model, label: str, build: bool = True, plist=None, root=None):
    """The model's index of the phrase source in args (built or resumed when `build`; else it must exist)."""
    plist = plist or P.read_phrases(args.phrases, args.limit)
    folder = Path(args.index) if args.index else P.default_index_folder(model, plist, root)
    if not build:
        return P.PhraseIndex.open(folder, model)
    return P.build_index(model, folder, plist, batch_size=args.batch_size, model_name=label, progress=True)


def cmd_phrases(args: argparse.Namespace) -> int:
    """Build or query a phrase index."""
    _check_phrase_args(args)
    for q in getattr(args, "queries", None) or []:
        _check_text(q, "a query")
    model = load_model(args)
    label = args.model
    if args.backbone:
        model, label = TextBackboneModel(model), f"{args.model} (text backbone)"  # or NotSupportedError
    if args.action == "build":
        index = _phrase_index(args, model, label)
        m = index.meta
        rate = f", {m['phrases_per_s']:,.0f} phrases/s" if m.get("phrases_per_s") else ""
        total = m.get("embed_seconds_all_runs")
        resumed = m.get("computed", len(index)) < len(index) and total is not None
        runs = f" ({total:.1f} s of embedding over all the runs that built it)" if resumed else ""
        print(f"{index.folder}: {len(index):,} phrases x {index.dim} ({m['dtype']}, "
              f"{m.get('bytes', 0) / 2**20:.1f} MiB) from {m['source']}; built in "
              f"{m.get('build_seconds', 0):.1f} s{rate}{runs}")
        return 0
    index = _phrase_index(args, model, label, build=False)
    hits = index.search(model, args.queries, k=args.k)
    if args.json:
        print(json.dumps({q: [{"phrase": p, "cosine": round(c, 5)} for p, c in h]
                          for q, h in zip(args.queries, hits)}, ensure_ascii=False, indent=2))
    else:
        for q, h in zip(args.queries, hits):
            print(f"{q}  (top {len(h)} of {len(index):,})")
            for rank, (p, c) in enumerate(h, 1):
                print(f"{rank:4d}  {c:+.4f}  {p}")
    if args.plot:
        out = Path(args.plot)
        maps = [[M.phrase_map(model, index, q, args.k, args.layout, args.seed, label)] for q in args.queries]
        info = M.draw_phrase_maps(maps, out)
        write_json({"queries": args.queries, "k": args.k, "layout": maps[0][0].layout, **info,
                    "panels": [{"query": m.query, "top": m.phrases, "cosine": m.scores} for r in maps for m in r]},
                   out.with_suffix(".json"))
        print(f"wrote {out} and {out.with_suffix('.json').name} (font: {info['font']['name']})")
    return 0


def cmd_fig5c(args: argparse.Namespace) -> int:
    """Fig. 5c with one model and its comparison."""
    args.backbone = False
    _check_phrase_args(args)
    queries = args.queries or list(M.FIG5C_QUERIES)
    for q in queries:
        _check_text(q, "a query")
    model = load_model(args)
    columns = []
    if args.compare == "backbone":
        if not isinstance(model, HasTextBackbone):
            raise InputError(f"{type(model).__name__} has no text backbone to compare with; pass --compare none "
                             f"or --compare MODEL")
        columns.append((f"{args.model} text backbone", TextBackboneModel(model)))
    elif args.compare != "none":
        columns.append((args.compare, load_model(args, args.compare)))
    columns.append((args.model, model))
    plist = P.read_phrases(args.phrases, args.limit)
    root, args.index = args.index, None  # one index per model, in folders named by fingerprint under root
    built = [(label, m, _phrase_index(args, m, label, plist=plist, root=root)) for label, m in columns]
    info = M.fig5c(built, args.out, queries=queries, k=args.k, seed=args.seed, layout=args.layout)
    font = info["font"]
    print(f"wrote {Path(args.out) / 'fig5c.png'} and fig5c.json ({info['time_s']:.1f} s; font {font['name']}"
          f"{', no CJK font: see the warning' if info['font_warning'] else ''})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """`brivl compare imagine A B TEXT...`: both models render every text; one grid with every cross-model score."""
    for t in args.texts:
        _check_text(t, "a text")
    _check_render_args(args)
    models = [load_model(args, name) for name in args.models]
    result = compare.compare_imagine(models, args.models, args.texts, progress=True,
                                     **_render_settings(args))
    png, meta = compare.write(result, args.output)
    print(f"wrote {png} and {meta.name}")
    for m, name in enumerate(result.names):
        for t, text in enumerate(result.texts):
            cells = "  ".join(f"{judge} {float(result.scores[m, j, t]):+.4f}" + (
                "" if result.margin is None else f" (margin {float(result.margin[m, j, t]):+.4f})")
                for j, judge in enumerate(result.names))
            print(f"{name} rendered {text!r}: cosine under {cells}")
    return 0

