from tap_luminai.tap import TapLuminai

TapLuminai.cli()
