"""pushwire's sans-I/O protocol core: layouts, codec, decoder, connection state machines."""
