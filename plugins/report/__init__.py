"""Reporters: plugins that follow the loops (``on_round_finished``, ``on_variant_archived``)."""
