from tap_evovoice.tap import TapEvoVoice

TapEvoVoice.cli()
