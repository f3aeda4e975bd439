"""The web page (Gradio): a number written in several handwritings, with a
PNG download. `python app.py` serves it on localhost; `build` makes it."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from gan import images
from gan.digit_writer import DigitWriter
from gan.limits import (MAX_SEED, WriterError, check_count, check_flag, check_number,
                        check_seed)

# Upscaling of the picture on the page and in the download.
SCALE = 2
# Most handwritings per request: the slider's end, and what `render` accepts
# from any client (the Python API allows gan.limits.MAX_STYLES).
PAGE_STYLES = 16
EXAMPLE = "2026"


def render(writer: DigitWriter, text: str, styles: float, seed: float, verify: bool,
           folder: str) -> tuple[np.ndarray | None, str | None, str]:
    """(picture uint8 `[H, W]`, PNG path for the download, status line) for
    one request; bad input gives no picture and a message saying why."""
    try:  # the API's rules (gan.limits): the widgets' values and any client's
        text, seed_int = check_number(text), check_seed(seed)
        styles_int = check_count("handwritings", styles, PAGE_STYLES)
        number = writer.number(text, styles_int, seed_int, check_flag("verify", verify))
    except WriterError as e:
        return None, None, "⚠️ " + str(e).replace("`", "")
    picture = images.number_image(number.images, SCALE)
    path = os.path.join(folder, f"number_{text.strip().replace(' ', '_')}_seed{seed_int}.png")
    images.save_png(path, picture)
    status = f"**{text}** in {styles_int} handwriting{'s' * (styles_int > 1)}, seed {seed_int}"
    if verify:
        status += (f"; {number.redrawn} line{'s' * (number.redrawn != 1)} redrawn after "
                   "the classifier misread a digit")
        if number.unverified:
            status += f" ({number.unverified} still misread)"
    return np.asarray(picture), path, status


def build(writer: DigitWriter) -> Any:
    """The page, as a `gradio.Blocks` (not yet launched)."""
    import gradio as gr  # noqa: PLC0415 - only the web page needs it.

    folder = tempfile.mkdtemp(prefix="cdcgan-web-")

    def write(text, styles, seed, verify):
        picture, path, status = render(writer, text, styles, seed, verify, folder)
        return picture, gr.DownloadButton(value=path, interactive=path is not None), status

    def new_handwriting(text, styles, seed, verify):
        try:
            seed = (check_seed(seed) + 1) % (MAX_SEED + 1)
        except WriterError:  # a seed that was no seed: start again from 0
            seed = 0
        return (seed, *write(text, styles, seed, verify))

    with gr.Blocks(title="cDCGAN: write a number") as page:
        gr.Markdown("# Write a number\nA conditional GAN trained on MNIST writes it, "
                    "each line in one handwriting.")
        with gr.Row():
            text = gr.Textbox(EXAMPLE, label="Number (digits and spaces, up to 64)",
                              max_lines=1, elem_id="number")
            styles = gr.Slider(1, PAGE_STYLES, value=8, step=1,
                               label="Handwritings", elem_id="styles")
            seed = gr.Number(0, label="Seed", precision=None, elem_id="seed")
        with gr.Row():
            verify = gr.Checkbox(False, label="Verify: redraw lines with a misread digit",
                                 elem_id="verify")
            go = gr.Button("Write", variant="primary", elem_id="write")
            new = gr.Button("New handwriting", elem_id="new")
        status = gr.Markdown(elem_id="status")
        picture = gr.Image(label="Your number", format="png", type="numpy",
                           interactive=False, elem_id="picture")
        download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download")
        inputs, outputs = [text, styles, seed, verify], [picture, download, status]
        go.click(write, inputs, outputs, api_name="write")
        text.submit(write, inputs, outputs)
        new.click(new_handwriting, inputs, [seed, *outputs])
        page.load(write, inputs, outputs)
    return page
