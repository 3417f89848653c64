"""`mnist-jax summary --model NAME`: print the model's layers, shapes, parameters and FLOPs; optionally draw it."""

import argparse

from mnist_jax import jsonio
from mnist_jax.cli import add_compile_cache_flag, add_flag, use_compile_cache
from mnist_jax.cli.train import MODEL_FIELDS, add_config_flags, config_from_args


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("summary", help="print a model's layers, output shapes, parameters and FLOPs",
                                 description="Trace a model on one image and print its layers with output shapes, "
                                             "parameter counts and FLOPs per image, like Keras' model.summary().")
    add_config_flags(parser, MODEL_FIELDS)
    add_flag(parser, "--diagram", "also draw the layers as boxes into this image file (.png, .svg, .pdf, ...)",
             default=None, metavar="FILE")
    add_flag(parser, "--json", "print the summary as one JSON object", action="store_true")
    add_compile_cache_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mnist_jax.models import model_from_config, model_hparams
    from mnist_jax.summary import format_summary, summarize, summary_totals, xla_flops

    config = config_from_args(args)
    use_compile_cache(args)
    model = model_from_config(config)
    hparams = model_hparams(config.model, config.to_dict())
    rows = summarize(model)
    compiled_flops = xla_flops(model)
    if args.diagram:
        from mnist_jax.diagram import draw_model, save_diagram

        save_diagram(draw_model(model, rows), args.diagram)
    if args.json:
        print(jsonio.dumps({"model": config.model, "hparams": hparams, "layers": [row.to_dict() for row in rows],
                          **summary_totals(rows), "xla_flops_per_image": compiled_flops}))
    else:
        title = f"{type(model).__name__}({', '.join(f'{key}={value}' for key, value in hparams.items())})"
        print(format_summary(rows, title=title, xla_flops=compiled_flops))
        if args.diagram:
            print(f"Diagram: {args.diagram}")
    return 0
