"""cDCGAN on MNIST in JAX/Flax. `from gan import DigitWriter` for the Python API
(gan/digit_writer.py); the rest is imported by module (`from gan import loop`).
docs/architecture.md maps the modules."""


def __getattr__(name: str):
    # Lazy: `import gan.cli` (train.py --help) must not import JAX.
    if name == "DigitWriter":
        from gan.digit_writer import DigitWriter
        return DigitWriter
    raise AttributeError(f"module 'gan' has no attribute {name!r}")
