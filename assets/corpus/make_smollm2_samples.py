"""Writes smollm2-samples.txt: the text corpus for ROME's key statistics C = E[k kᵀ].

ROME took C from Wikipedia; that dump no longer loads and is far more than needed (about
10 × d_mlp keys suffice, Gupta et al. 2025). This corpus is text sampled from SmolLM2
itself (temperature 0.9, top-p 0.95, fixed seed) after varied short openings, so it is
free of copyright questions and its keys are the ones the model actually produces.
SmolLM2's d_mlp is 1536, so ~15k tokens are wanted; this writes about 18k.

    .venv/bin/python assets/corpus/make_smollm2_samples.py
"""

from __future__ import annotations

from pathlib import Path

import torch

OPENINGS = [
    "The history of the city begins", "In the early morning, the fishermen", "Photosynthesis is the process by which",
    "The recipe calls for", "When the war ended in", "A good way to learn a new language is", "The river flows through",
    "Scientists have discovered that", "My grandmother used to tell me", "The football match was", "In mathematics, a prime number",
    "The museum is famous for", "To install the software, first", "The company announced on Monday that", "Volcanoes form when",
    "The novel tells the story of", "During the Renaissance, artists", "The human heart has four", "Tourists visiting the island often",
    "The election results showed", "A healthy diet includes", "The train to the capital", "Ancient Egyptians believed that",
    "The weather forecast for the weekend", "He opened the door and saw", "Computers store information as", "The capital of the country is",
    "The orchestra performed", "In 1969, astronauts", "The law was passed by", "Bees communicate by", "The mountain village was",
    "She studied medicine at", "The bridge was built in", "Climate change affects", "The king and queen of", "Chess is a game in which",
    "The small shop on the corner", "Electric cars are", "The painting shows", "Dear friends, today we", "The university was founded",
    "Whales are mammals that", "The festival takes place every", "According to the report,", "The first step in writing an essay",
    "The ancient Roman roads", "Our team worked on", "The desert at night", "The language spoken in the region",
    "Q: What is the tallest building in the world?\nA:", "Once upon a time, in a kingdom far away,", "The singer was born in",
    "The basketball player signed with", "The headquarters of the company is located in", "The Amazon rainforest is",
    "Coffee was first grown in", "The actor is best known for", "Trains, buses and ferries", "The newspaper reported that the mayor",
]
TOKENS_PER_SAMPLE = 280
BATCH = 20
SEED = 1234


def main() -> None:
    from workbench.models.loading import load_hf_model

    _, model, tokenizer = load_hf_model("smollm2")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.set_num_threads(1)  # the machine it was made on was shared; one thread avoids oversubscription
    torch.manual_seed(SEED)
    texts = []
    for start in range(0, len(OPENINGS), BATCH):
        batch = OPENINGS[start : start + BATCH]
        enc = tokenizer(batch, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=TOKENS_PER_SAMPLE, do_sample=True, temperature=0.9, top_p=0.95, pad_token_id=tokenizer.pad_token_id)
        for opening, row in zip(batch, out):
            continuation = tokenizer.decode(row[enc["input_ids"].shape[1] :], skip_special_tokens=True)
            texts.append((opening + continuation).strip())
        print(f"{start + len(batch)} of {len(OPENINGS)} samples", flush=True)
    path = Path(__file__).with_name("smollm2-samples.txt")
    path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    n = len(tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    print(f"wrote {path} ({n} tokens)")


if __name__ == "__main__":
    main()
