"""Parameter counts and forward FLOPs of registered models.

``params`` is ``sum(p.numel())`` over ``parameters()``, as the notebook prints it; ``trainable`` leaves out
``buffers`` (BatchNorm's running statistics, which paddle lists among the parameters). ``python
tools/count_params.py`` prints a table of every model; ``--json`` prints ``{"LeNet": {"params": 61706,
"trainable": 61706, "buffers": 0, "flops": 833040}, ...}``; ``-c CONFIG [-o ...]`` restricts it to that
config's model and options — a YAML config or a run folder (its recorded config) — built exactly as training
builds it (``Experiment``), so the numbers are those of the model a run trains and records in ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_lenet.cli import ArgParser, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", help="count only this config's model (a YAML config or a run folder)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value")
    parser.add_argument("--json", action="store_true", help="print {model: {params, trainable, buffers, flops}} as JSON")
    parser.add_argument("--layers", action="store_true",
                        help="with -c: each layer's output shape, parameters and FLOPs (why 28 → 14 → 5, where the "
                             "parameters are)")
    args = parser.parse_args(argv)
    from paddle_lenet.config import load_config
    from paddle_lenet.engine import Experiment
    from paddle_lenet.flops import count_flops
    from paddle_lenet.models import count_params, count_trainable, create_model, get_entry, list_models
    from paddle_lenet.runfolder import resolve_run_config

    if args.config:
        cfg = resolve_run_config(args.config, args.override)[0] if os.path.isdir(args.config) \
            else load_config(args.config, args.override)
        nets = [(cfg["Arch"]["name"], Experiment(cfg, load_train=False, load_test=False).net)]
    else:
        nets = [(name, create_model(name)) for name in list_models()]
    if args.layers:
        from paddle_lenet.analysis import layer_table
        from paddle_lenet.errors import ConfigError

        if not args.config:
            raise ConfigError("--layers needs -c CONFIG (or a run folder): the table is of one model")
        name, net = nets[0]
        table = layer_table(net, get_entry(name).input_shape)
        if args.json:
            print(json.dumps({"model": name, "layers": table, "params": count_params(net),
                              "flops": count_flops(net, get_entry(name).input_shape)}))
            return 0
        print(f"{name}, input {'x'.join(map(str, get_entry(name).input_shape))}")
        print(f"{'layer':<22} {'type':<16} {'output':<14} {'params':>9} {'FLOPs':>12}")
        for r in table:
            print(f"{r['layer']:<22} {r['type']:<16} {'x'.join(map(str, r['output'])):<14} {r['params']:>9,} {r['flops']:>12,}")
        print(f"{'total':<53} {count_params(net):>9,} {count_flops(net, get_entry(name).input_shape):>12,}")
        return 0
    rows = []
    for name, net in nets:
        trainable, buffers = count_trainable(net)
        rows.append((name, count_params(net), trainable, buffers, count_flops(net, get_entry(name).input_shape),
                     get_entry(name)))
    if args.json:
        print(json.dumps({name: {"params": p, "trainable": t, "buffers": b, "flops": f} for name, p, t, b, f, _ in rows}))
        return 0
    print(f"{'model':<18} {'params':>11} {'trainable':>11} {'buffers':>8} {'FLOPs/img':>13}  input     seed")
    for name, params, trainable, buffers, flops, e in rows:
        print(f"{name:<18} {params:>11,} {trainable:>11,} {buffers:>8,} {flops:>13,}  "
              f"{'x'.join(map(str, e.input_shape)):<9} {e.source}")
    return 0


if __name__ == "__main__":
    run(main)
