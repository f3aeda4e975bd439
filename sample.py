"""Write digits on request from a trained generator.

    python sample.py --number 2026 --styles 8 --out 2026.png   # a number, 8 hands
    python sample.py --digits 0123456789 --per-digit 10        # a grid, a row per digit
    python sample.py --interpolate styles --number 2026        # a GIF between hands
    python sample.py --interpolate digits --out morph.gif      # 0 -> 1 -> ... -> 9
    python sample.py --checkpoint runs/x --number 2026         # your own run
    python sample.py --number 2026 --style-from my7.png        # in your handwriting
    python sample.py --checkpoint runs/fashion --classes Sneaker,Bag  # other data
"""

from __future__ import annotations

import io
import sys

from gan import cli

# The widest grid picture written (pixels, a 4K screen): wider requests show
# their first columns (the .npz holds every sample).
MAX_GRID_WIDTH = 3840
# What a run writes when --out is not given.
DEFAULT_OUT = {"grid": "samples.png", "number": "number.png", "interpolate": "morph.gif"}


def make_parser() -> cli.argparse.ArgumentParser:
    """The command line, one flag per setting (docs/cli.md lists them)."""
    p = cli.ArgumentParser(
        prog="sample.py",
        description="Write digits with a trained generator: a number in several "
        "handwritings (--number), a grid with a row per digit (--digits) or class "
        "(--classes), or a GIF morphing between handwritings or digits "
        "(--interpolate).",
        formatter_class=cli.argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a train.py --workdir (its latest checkpoint is used) or a "
                   "generator.msgpack file (default: the pretrained generator in "
                   "weights/)")
    p.add_argument("--number", default=None,
                   help="digits (and spaces) to write left to right, e.g. 2026 or "
                   "'2026 11 30'; one line per handwriting (--styles)")
    p.add_argument("--styles", type=int, default=None,
                   help="handwritings: lines of --number, columns of --interpolate "
                   "(default: 4, or 1 with --style-from)")
    p.add_argument("--digits", default=None,
                   help="grid mode: digits to write, one grid row each (default: "
                   "0123456789)")
    p.add_argument("--classes", default=None,
                   help="grid mode, for a generator of other data: classes to draw, "
                   "one grid row each, by name or index, e.g. Sneaker,Bag or 7,8 "
                   "(default: all)")
    p.add_argument("--per-digit", "--per-class", type=int, default=10,
                   dest="per_digit",
                   help="grid mode: samples per digit or class (grid columns)")
    p.add_argument("--interpolate", choices=("styles", "digits"), default=None,
                   help="write a GIF: --number morphing through --styles "
                   "handwritings, or each digit turning into the next")
    p.add_argument("--verify", action="store_true",
                   help="read every digit with the MNIST classifier and redraw the "
                   "misread ones (a whole line for --number)")
    p.add_argument("--style-from", default=None, metavar="PICTURE",
                   help="write in the handwriting of one digit you drew or "
                   "photographed (any picture file; docs/handwriting.md)")
    p.add_argument("--style-label", type=int, default=None,
                   help="which digit --style-from shows (default: the classifier "
                   "reads it, and asks when unsure)")
    p.add_argument("--show-fit", action="store_true",
                   help="with --style-from: put the prepared digit and G's redrawing "
                   "of it left of the picture")
    p.add_argument("--raw", action="store_true",
                   help="sample G's own weights, not their average (EMA); "
                   "needs a train.py workdir as --checkpoint")
    p.add_argument("--seed", type=cli.seed, default=0, help="noise seed")
    p.add_argument("--out", default=None,
                   help="PNG (GIF for --interpolate) to write (default: "
                   + ", ".join(f"{v} for {k}" for k, v in DEFAULT_OUT.items())
                   + "; with --npz, none unless given)")
    p.add_argument("--scale", type=int, default=2, help="picture upscaling factor")
    p.add_argument("--npz", default=None,
                   help="also write the digits: images (uint8 [N,28,28]), labels "
                   "(int [N]), class_names (label i is class_names[i]), and for "
                   "--number each one's line and position")
    return p


def parse_args(argv: list[str] | None):
    return make_parser().parse_args(argv)


def check_args(args) -> tuple[str, str | None]:
    """(mode, picture path or None); one line and exit 2 for what cannot work."""
    mode = "interpolate" if args.interpolate else (
        "number" if args.number is not None else "grid")
    if args.styles is None:
        args.styles = 1 if args.style_from is not None else 4
    if args.interpolate == "styles" and args.number is None:
        cli.fail("--interpolate styles needs --number, e.g. --number 2026")
    if args.interpolate == "digits" and args.number is not None:
        cli.fail("--interpolate digits morphs every digit into the next; --number "
                 "is for --interpolate styles")
    if args.npz and mode == "interpolate":
        cli.fail("--npz is for --number and --digits, not --interpolate")
    if args.style_from is None and (args.style_label is not None or args.show_fit):
        cli.fail("--style-label and --show-fit go with --style-from")
    if args.style_from is not None and mode == "interpolate":
        cli.fail("--style-from is for --number and --digits, not --interpolate")
    if args.classes is not None and (mode != "grid" or args.digits is not None):
        cli.fail("--classes makes a grid: it goes without --number, --interpolate "
                 "and --digits")
    if args.scale <= 0 or args.scale > 16:
        cli.fail(f"--scale must be between 1 and 16, got {args.scale}")
    # The Python API's rules and messages (gan.limits), checked before JAX loads.
    from gan import limits  # noqa: PLC0415 - light
    try:
        if args.number is not None:
            limits.check_number(args.number)
        limits.check_count("styles", args.styles, limits.MAX_STYLES)
        if args.style_label is not None:
            limits.whole("style_label", args.style_label, 0, 9)
        if mode == "grid":
            if args.digits is not None:
                limits.check_digits(args.digits)
            limits.check_count("per_digit", args.per_digit, limits.MAX_IMAGES)
            limits.check_work(len(args.digits or "0123456789") * args.per_digit)
    except limits.WriterError as e:
        cli.fail(str(e))
    out = args.out or (None if args.npz else DEFAULT_OUT[mode])
    suffix = ".gif" if mode == "interpolate" else ".png"
    if out is not None:
        if not out.lower().endswith(suffix):
            cli.fail(f"--out {out}: this writes a {suffix[1:].upper()} file, so the "
                     f"name must end in {suffix}")
        cli.check_writable(out, "--out", reads=[args.checkpoint, args.style_from])
    if args.npz:
        if not args.npz.lower().endswith(".npz"):
            cli.fail(f"--npz {args.npz}: the name must end in .npz")
        cli.check_writable(args.npz, "--npz", reads=[args.checkpoint, args.style_from])
    return mode, out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode, out = check_args(args)
    cli.set_up_process()
    cli.check_xla_flags()
    cli.enable_compile_cache()

    import numpy as np  # noqa: PLC0415 - imported here so --help stays instant.
    from gan import digit_writer, files, handwriting, images  # noqa: PLC0415
    from gan.errors import CheckpointError  # noqa: PLC0415

    try:
        style = (handwriting.read_picture(args.style_from)
                 if args.style_from is not None else None)
        w = digit_writer.DigitWriter.load(args.checkpoint, raw=args.raw)
        if style is not None:
            style = w.style_from(style, args.style_label, args.seed)
        if mode == "number":
            number = w.number(args.number, args.styles, args.seed, args.verify, style)
            arrays, redrawn = number.digits(), number.redrawn
            picture = images.number_image(number.images, args.scale)
            what = f"{args.number!r} in {args.styles} handwriting(s)"
        elif mode == "grid":
            if args.digits is not None and not w.writes_digits:
                raise digit_writer.WriterError(
                    f"--digits is for a generator of digits; this one draws "
                    f"{len(w.classes)} classes: choose them with --classes")
            wanted = args.digits if args.classes is None else args.classes
            if args.classes is not None and w.writes_digits:
                wanted = args.classes.split(",")  # names or indices, as for others
            rows = w.class_rows(wanted)
            cells, redrawn = w.grid(rows, args.per_digit, args.seed, args.verify, style)
            arrays = {"images": cells.reshape(-1, 28, 28),
                      "labels": np.repeat(np.array(rows, np.int32), args.per_digit)}
            names = [w.classes[r] for r in rows]
            blocks = (1 if len(rows) <= images.ROWS_PER_BLOCK
                      else -(-len(rows) // images.ROWS_PER_BLOCK))  # side by side
            width = MAX_GRID_WIDTH // blocks - (blocks > 1) * images.NAME_WIDTH * args.scale
            cols = max(1, min(args.per_digit, width // (28 * args.scale + 2)))
            picture = (images.grid_image(cells[:, :cols].reshape(-1, 28, 28),
                                         len(rows), cols, args.scale)
                       if w.writes_digits else images.class_grid(
                           cells[:, :cols].reshape(-1, 28, 28), names, args.scale))
            kind = "digits" if w.writes_digits else "images"
            shown = "".join(names) if w.writes_digits else ",".join(names)
            what = f"{len(rows) * args.per_digit} {kind} ({shown} x {args.per_digit})"
            if cols < args.per_digit and out:
                what += f"; the picture shows the first {cols} columns"
        else:
            frames = (w.style_morph(args.number, args.styles, seed=args.seed)
                      if args.interpolate == "styles" else
                      w.digit_morph(args.styles, seed=args.seed))  # [F, cells, 28, 28]
            frames = frames[:, None]                               # a line per frame
            pictures = [images.number_image(f, args.scale) for f in frames]
            what = f"a {len(frames)}-frame morph ({args.interpolate})"
    except (CheckpointError, digit_writer.WriterError) as e:
        cli.fail(str(e))
    if style is not None:
        how = "a" if args.style_label is not None else "read as a"
        what = what.replace(f" in {args.styles} handwriting(s)", "") + (
            f" in the handwriting of {args.style_from} ({how} {style.label})")
        if args.show_fit and mode != "interpolate":
            fit = images.number_image(np.stack([[style.source, style.fit]]), args.scale)
            picture = images.beside(fit, picture)
    try:
        if mode == "interpolate":
            images.save_frames_gif(pictures, out)
        elif out:
            images.save_png(out, picture)
        if args.npz:
            buffer = io.BytesIO()  # np.savez on a name would add .npz to it
            np.savez_compressed(buffer, class_names=np.asarray(w.classes),
                                **{k: np.asarray(v) for k, v in arrays.items()})
            files.write_bytes(args.npz, buffer.getvalue())
    except OSError as e:
        cli.fail(f"cannot write output: {e}")
    source = f"step {w.step}" + (" (EMA)" if w.averaged else "")
    targets = " and ".join(p for p in (out, args.npz) if p)
    unit = "line" if mode == "number" else "digit" if w.writes_digits else "image"
    verified = (f"; {redrawn} {unit}(s) redrawn "
                "after the classifier misread them" if args.verify else "")
    print(f"wrote {what} from {source} to {targets}{verified}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
