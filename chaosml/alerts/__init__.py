"""Alert sources: where chaosml reads which alerts fired."""
