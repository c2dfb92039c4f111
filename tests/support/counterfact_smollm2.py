"""Builds and checks examples/counterfact_smollm2.json: CounterFact-format facts SmolLM2 gets right.

Each candidate below is (case, template, subject, true object, new object, paraphrases,
neighbours), the neighbours being prompts about other subjects with the same true object
(so an edit that bleeds over shows up as a lower NS). A case is kept when, on the
unedited model, P(true) > P(new) and the true object's first token is among the top 3
next tokens on the rewrite prompt, and P(true) > P(new) on every paraphrase; only
neighbours where P(true) > P(new) are kept (at least 2). Probabilities of multi-token
objects are products of teacher-forced token probabilities, with the leading space.

    .venv/bin/python -m tests.support.counterfact_smollm2            # check the file
    .venv/bin/python -m tests.support.counterfact_smollm2 --write    # rebuild it from the candidates
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent.parent.parent / "examples" / "counterfact_smollm2.json"
TOP_K = 3
MIN_NEIGHBOURS = 2

LOC = "{} is located in the city of"
COUNTRY = "{} is located in the country of"
SPORT = "{} plays the sport of"
CAR = "{} is a car company from"

CANDIDATES = [
    ("The Eiffel Tower", LOC, "Paris", "Rome", ["The Eiffel Tower can be found in the city of", "Tourists who visit the Eiffel Tower travel to the city of"], ["The Louvre is located in the city of", "Notre-Dame Cathedral is located in the city of", "The Arc de Triomphe is located in the city of", "The Champs-Élysées is located in the city of"]),
    ("The Colosseum", LOC, "Rome", "Athens", ["The Colosseum can be found in the city of", "Tourists who visit the Colosseum travel to the city of"], ["The Trevi Fountain is located in the city of", "The Pantheon is located in the city of", "The Vatican is located in the city of", "The Roman Forum is located in the city of"]),
    ("Big Ben", LOC, "London", "Berlin", ["Big Ben can be found in the city of", "Tourists who visit Big Ben travel to the city of"], ["Buckingham Palace is located in the city of", "Tower Bridge is located in the city of", "The British Museum is located in the city of", "Trafalgar Square is located in the city of"]),
    ("The Brandenburg Gate", LOC, "Berlin", "Madrid", ["The Brandenburg Gate can be found in the city of", "Tourists who visit the Brandenburg Gate travel to the city of"], ["The Reichstag building is located in the city of", "Checkpoint Charlie is located in the city of", "The Berlin Wall Memorial is located in the city of"]),
    ("The Kremlin", LOC, "Moscow", "Warsaw", ["The Kremlin can be found in the city of", "Tourists who visit the Kremlin travel to the city of"], ["Red Square is located in the city of", "The Bolshoi Theatre is located in the city of", "Saint Basil's Cathedral is located in the city of"]),
    ("The Parthenon", LOC, "Athens", "Cairo", ["The Parthenon can be found in the city of", "Tourists who visit the Parthenon travel to the city of"], ["The Acropolis is located in the city of", "The Temple of Olympian Zeus is located in the city of", "The Panathenaic Stadium is located in the city of"]),
    ("The Sagrada Familia", LOC, "Barcelona", "Lisbon", ["The Sagrada Familia can be found in the city of", "Tourists who visit the Sagrada Familia travel to the city of"], ["Park Güell is located in the city of", "Camp Nou is located in the city of", "La Rambla is located in the city of"]),
    ("The Statue of Liberty", LOC, "New York", "Chicago", ["The Statue of Liberty can be found in the city of", "Tourists who visit the Statue of Liberty travel to the city of"], ["The Empire State Building is located in the city of", "Central Park is located in the city of", "Times Square is located in the city of", "Wall Street is located in the city of"]),
    ("The Golden Gate Bridge", LOC, "San Francisco", "Seattle", ["The Golden Gate Bridge can be found in the city of", "Tourists who visit the Golden Gate Bridge travel to the city of"], ["Alcatraz Island is located in the city of", "Fisherman's Wharf is located in the city of", "Lombard Street is located in the city of"]),
    ("The Great Wall", COUNTRY, "China", "India", ["The Great Wall can be found in the country of", "Tourists who visit the Great Wall travel to the country of"], ["The Forbidden City is located in the country of", "The Terracotta Army is located in the country of", "Shanghai is located in the country of", "Beijing is located in the country of"]),
    ("The Taj Mahal", COUNTRY, "India", "Pakistan", ["The Taj Mahal can be found in the country of", "Tourists who visit the Taj Mahal travel to the country of"], ["Mumbai is located in the country of", "New Delhi is located in the country of", "The Golden Temple is located in the country of"]),
    ("Mount Fuji", COUNTRY, "Japan", "China", ["Mount Fuji can be found in the country of", "Tourists who visit Mount Fuji travel to the country of"], ["Kyoto is located in the country of", "Osaka is located in the country of", "Tokyo is located in the country of", "Hiroshima is located in the country of"]),
    ("The Sydney Opera House", COUNTRY, "Australia", "Canada", ["The Sydney Opera House can be found in the country of", "Tourists who visit the Sydney Opera House travel to the country of"], ["Melbourne is located in the country of", "Canberra is located in the country of", "The Great Barrier Reef is located in the country of"]),
    ("The pyramids of Giza", COUNTRY, "Egypt", "Mexico", ["The pyramids of Giza can be found in the country of", "Tourists who visit the pyramids of Giza travel to the country of"], ["The Great Sphinx is located in the country of", "Cairo is located in the country of", "Luxor is located in the country of", "Alexandria is located in the country of"]),
    ("Machu Picchu", COUNTRY, "Peru", "Chile", ["Machu Picchu can be found in the country of", "Tourists who visit Machu Picchu travel to the country of"], ["Lima is located in the country of", "Cusco is located in the country of", "Lake Titicaca's Peruvian shore is located in the country of"]),
    ("Lionel Messi", SPORT, "football", "basketball", ["Lionel Messi is a professional player of", "The sport Lionel Messi is famous for is"], ["Cristiano Ronaldo plays the sport of", "Neymar plays the sport of", "Kylian Mbappé plays the sport of", "Zinedine Zidane plays the sport of"]),
    ("Michael Jordan", SPORT, "basketball", "baseball", ["Michael Jordan is a professional player of", "The sport Michael Jordan is famous for is"], ["LeBron James plays the sport of", "Kobe Bryant plays the sport of", "Stephen Curry plays the sport of", "Shaquille O'Neal plays the sport of"]),
    ("Roger Federer", SPORT, "tennis", "golf", ["Roger Federer is a professional player of", "The sport Roger Federer is famous for is"], ["Rafael Nadal plays the sport of", "Serena Williams plays the sport of", "Novak Djokovic plays the sport of", "Andy Murray plays the sport of"]),
    ("Tiger Woods", SPORT, "golf", "tennis", ["Tiger Woods is a professional player of", "The sport Tiger Woods is famous for is"], ["Rory McIlroy plays the sport of", "Phil Mickelson plays the sport of", "Jack Nicklaus plays the sport of"]),
    ("Toyota", CAR, "Japan", "Germany", ["Toyota is an automobile manufacturer based in", "The carmaker Toyota comes from"], ["Honda is a car company from", "Nissan is a car company from", "Mazda is a car company from", "Subaru is a car company from"]),
    ("BMW", CAR, "Germany", "Italy", ["BMW is an automobile manufacturer based in", "The carmaker BMW comes from"], ["Volkswagen is a car company from", "Mercedes-Benz is a car company from", "Audi is a car company from", "Porsche is a car company from"]),
    ("Ferrari", CAR, "Italy", "France", ["Ferrari is an automobile manufacturer based in", "The carmaker Ferrari comes from"], ["Lamborghini is a car company from", "Fiat is a car company from", "Maserati is a car company from", "Alfa Romeo is a car company from"]),
    ("Kenya", "{} is located in the continent of", "Africa", "Europe", ["Kenya is a country in the continent of", "The country of Kenya lies in"], ["Nigeria is located in the continent of", "Ethiopia is located in the continent of", "Ghana is located in the continent of", "Tanzania is located in the continent of"]),
    ("France", "The capital city of {} is", "Paris", "London", ["The capital of France is the city of", "France's capital city is"], ["The Eiffel Tower is located in the city of", "The Louvre is located in the city of", "The Arc de Triomphe is located in the city of"]),
    ("Japan", "The capital city of {} is", "Tokyo", "Beijing", ["The capital of Japan is the city of", "Japan's capital city is"], ["The Tokyo Skytree is located in the city of", "Shibuya Crossing is located in the city of", "The Imperial Palace of Japan is located in the city of"]),
    ("Germany", "The capital city of {} is", "Berlin", "Vienna", ["The capital of Germany is the city of", "Germany's capital city is"], ["The Brandenburg Gate is located in the city of", "The Reichstag building is located in the city of", "Checkpoint Charlie is located in the city of"]),
    ("The iPhone", "{} is made by the company", "Apple", "Samsung", ["The iPhone is produced by the company", "The company that makes the iPhone is"], ["The iPad is made by the company", "The MacBook is made by the company", "The Apple Watch is made by the company"]),
    ("Windows", "{} is developed by the company", "Microsoft", "Google", ["Windows is an operating system made by the company", "The company that develops Windows is"], ["Microsoft Office is developed by the company", "The Xbox is developed by the company", "Visual Studio is developed by the company"]),
]


def probabilities(model, prompts, target):
    from workbench.editing.prompts import target_probabilities

    return target_probabilities(model, prompts, [target] * len(prompts))


def top_tokens(model, prompt: str, k: int) -> list[int]:
    with torch.no_grad():
        logits = model.bridge(torch.tensor([model.tokenize(prompt)]))[0, -1]
    return torch.topk(logits, k).indices.tolist()


def check_record(model, record: dict) -> tuple[bool, list[str], list[str]]:
    """(rewrite and paraphrases right, neighbours that are right, reasons for a failure)."""
    from workbench.editing.prompts import target_ids

    rw = record["requested_rewrite"]
    prompt = rw["prompt"].replace("{}", rw["subject"])
    true, new = rw["target_true"]["str"], rw["target_new"]["str"]
    reasons = []
    prompts = [prompt] + record["paraphrase_prompts"]
    pt, pn = probabilities(model, prompts, true), probabilities(model, prompts, new)
    for p, t, n in zip(prompts, pt, pn):
        if not t > n:
            reasons.append(f"P(true) {t:.3f} <= P(new) {n:.3f} on {p!r}")
    if target_ids(model, prompt, true)[0] not in top_tokens(model, prompt, TOP_K):
        reasons.append(f"{true!r} is not in the top {TOP_K} on {prompt!r}")
    nt, nn = probabilities(model, record["neighborhood_prompts"], true), probabilities(model, record["neighborhood_prompts"], new)
    good = [p for p, t, n in zip(record["neighborhood_prompts"], nt, nn) if t > n]
    return not reasons, good, reasons


def build(model) -> list[dict]:
    records = []
    for subject, template, true, new, paraphrases, neighbours in CANDIDATES:
        record = {
            "case_id": len(records),
            "requested_rewrite": {"prompt": template, "subject": subject, "target_new": {"str": new}, "target_true": {"str": true}},
            "paraphrase_prompts": paraphrases,
            "neighborhood_prompts": neighbours,
            "generation_prompts": [f"{subject} is", template.replace("{}", subject)],
        }
        ok, good, reasons = check_record(model, record)
        if ok and len(good) >= MIN_NEIGHBOURS:
            record["neighborhood_prompts"] = good
            records.append(record)
            print(f"kept    {subject}: {len(good)} neighbours")
        else:
            print(f"dropped {subject}: {'; '.join(reasons) or 'too few neighbours right'}")
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rebuild the file from the candidates")
    args = parser.parse_args(argv)
    from workbench.models import load_model

    model = load_model("smollm2")
    if args.write:
        records = build(model)
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {len(records)} records to {DATA}")
        return 0
    records = json.loads(DATA.read_text(encoding="utf-8"))
    bad = 0
    for record in records:
        ok, good, reasons = check_record(model, record)
        wrong = len(record["neighborhood_prompts"]) - len(good)
        if not ok or wrong:
            bad += 1
            print(f"case {record['case_id']}: {'; '.join(reasons)} {wrong} neighbour(s) wrong")
    print(f"{len(records) - bad} of {len(records)} records right on SmolLM2")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
