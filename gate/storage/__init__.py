"""Storage without Flask: connections and transactions, migrations, the clock, the meter, events."""
