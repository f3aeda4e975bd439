"""The web page (Gradio): a number written in several handwritings, with a
PNG download. `python app.py` serves it on localhost; `build` makes it."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from gan import images
from gan.digit_writer import MAX_STYLES, DigitWriter, WriterError

# Upscaling of the picture on the page and in the download.
SCALE = 2
# Handwritings the page offers (the API allows MAX_STYLES).
PAGE_STYLES = 16
EXAMPLE = "2026"


def render(writer: DigitWriter, text: str, styles: float, seed: float, verify: bool,
           folder: str) -> tuple[np.ndarray | None, str | None, str]:
    """(picture uint8 `[H, W]`, PNG path for the download, status line) for
    one request; bad input gives no picture and a message saying why."""
    try:
        seed_int = int(seed) if seed is not None else -1
        if seed_int != seed or not 0 <= seed_int < 2**32:
            raise WriterError(f"the seed must be a whole number from 0 to {2**32 - 1}")
        styles_int = int(styles or 0)
        number = writer.number(text or "", styles_int, seed_int, verify)
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
        seed = (int(seed) + 1) % 2**32 if seed is not None and seed == int(seed) else 0
        return (seed, *write(text, styles, seed, verify))

    with gr.Blocks(title="cDCGAN: write a number") as page:
        gr.Markdown("# Write a number\nA conditional GAN trained on MNIST writes it, "
                    "each line in one handwriting.")
        with gr.Row():
            text = gr.Textbox(EXAMPLE, label="Number (digits and spaces, up to 64)",
                              max_lines=1, elem_id="number")
            styles = gr.Slider(1, min(PAGE_STYLES, MAX_STYLES), value=8, step=1,
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
