from tap_kore_billing.tap import TapKoreBilling

TapKoreBilling.cli()
