"""Model zoo: reference networks with their data, training and shipped integer weights."""
