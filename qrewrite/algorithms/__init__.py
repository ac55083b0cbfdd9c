"""Weight algorithms (CLE, AdaRound, AdaQuant, GPTQ, HQQ); none is built yet."""
