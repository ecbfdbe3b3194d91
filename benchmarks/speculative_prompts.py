"""Prompts for benchmarks/speculative.py, written for it (no third-party text).

Grounded tasks hand the model the text its answer should draw on — summarise, quote,
answer-from-passage, code edit — so replies repeat spans of the prompt (what n-gram prompt lookup
drafts from). The ungrounded set is open-ended chat, where lookup has little to find.
"""
from __future__ import annotations

PASSAGES = [
    ("lighthouse",
     "The Skerry Point lighthouse was built in 1871 on a granite ledge two miles off the coast. Its first "
     "keeper, Thomas Avery, lived there with his wife and two sons, rowing to the mainland once a month for "
     "supplies. The lamp burned whale oil until 1893, when it was converted to kerosene, and it was finally "
     "electrified in 1952. The station was automated in 1987, and the last keeper left the island that "
     "autumn. Today the tower is maintained by a volunteer society that opens it to visitors on summer weekends."),
    ("bees",
     "Honeybees tell each other where food is with a movement called the waggle dance. A forager that has "
     "found a good patch of flowers returns to the hive and walks a straight line while shaking her body, "
     "then circles back and repeats. The angle of the straight run relative to vertical shows the direction "
     "of the food relative to the sun, and the length of the waggle shows the distance. Other bees follow "
     "the dancer, learn the location, and fly out to find the flowers themselves."),
    ("council",
     "At its March meeting the Millbrook town council approved a budget of 4.2 million dollars for the coming "
     "year. The largest new item is the repair of the Elm Street bridge, which will be closed to traffic from "
     "June to September. The council also voted to extend library opening hours to eight in the evening on "
     "Thursdays. A proposal to raise parking fees downtown was postponed until the April meeting, after "
     "several shop owners said the increase would drive customers away."),
    ("bread",
     "To make a simple loaf, mix 500 grams of flour, 10 grams of salt, 7 grams of dried yeast and 350 "
     "millilitres of warm water. Knead the dough for ten minutes until it is smooth and elastic. Leave it "
     "in a covered bowl for about an hour, until it has doubled in size. Shape it into a loaf, place it in a "
     "greased tin, and let it rise for another thirty minutes. Bake at 220 degrees Celsius for 30 to 35 "
     "minutes, until the loaf sounds hollow when tapped underneath."),
    ("volcano",
     "Mount Aldren is a stratovolcano in the northern highlands. Its last major eruption, in 1786, sent ash "
     "as far as the coastal towns and destroyed three villages on its western slope. Since then the volcano "
     "has been quiet apart from small steam vents near the summit. Scientists installed a network of twelve "
     "seismometers around the mountain in 2009, and they record several hundred tiny earthquakes each year. "
     "The observatory says there is no sign of rising magma at present."),
    ("email",
     "Hi team, a quick update on the website migration. The new servers are ready and we will move the "
     "database on Saturday night, starting at 11 pm. The site will be offline for about two hours. Please "
     "do not publish any articles after 9 pm on Saturday, because they may be lost during the copy. On "
     "Sunday morning, please check your own pages and report any broken links to Maria. Thanks for your "
     "patience, and let me know if you have questions. Best, Daniel"),
    ("library",
     "The Harlow Library card gives members access to books, films and the digital archive. Members may "
     "borrow up to twelve items at a time. Books can be kept for three weeks and films for one week. Loans "
     "can be renewed twice online, unless another member has reserved the item. Late returns cost twenty "
     "cents per day per item, up to a maximum of five dollars. Lost cards can be replaced at the front desk "
     "for a fee of two dollars."),
    ("coffee",
     "Coffee plants grow best in the tropics at altitudes between 1000 and 2000 metres, where days are warm "
     "and nights are cool. The fruit, called a cherry, takes about nine months to ripen. After harvest the "
     "seeds are removed from the fruit and dried, either in the sun or with machines. The dried green beans "
     "are then shipped around the world and roasted close to where they will be sold, because roasted "
     "coffee loses its flavour within a few weeks."),
    ("marathon",
     "The Riverside Marathon starts at 7 am on the first Sunday of October. Runners must collect their race "
     "numbers on Friday or Saturday at the sports hall on Bridge Road; numbers will not be handed out on "
     "race day. Water stations are placed every five kilometres, and energy gels are available at the 20 "
     "and 30 kilometre marks. The course closes six hours after the start. Runners who have not reached "
     "the 30 kilometre mark by 11 am will be asked to board the support bus."),
    ("telescope",
     "The Kestrel telescope was launched in 2016 into an orbit 540 kilometres above the Earth. Its main "
     "mirror is 1.2 metres across, and its camera is sensitive to ultraviolet light that the atmosphere "
     "blocks from the ground. In its first five years the telescope observed more than 40,000 stars and "
     "discovered 73 planets orbiting other suns. The mission was planned to last three years but has been "
     "extended twice, and it is now expected to operate until 2027."),
    ("garden",
     "Tomatoes need at least six hours of direct sunlight a day. Plant the seedlings outside only after the "
     "last frost, about 60 centimetres apart, and bury the stem deeper than it grew in the pot so that it "
     "forms extra roots. Water deeply twice a week rather than a little every day, and water the soil, not "
     "the leaves. Tie the stems to stakes as they grow, and pinch out the side shoots that appear between "
     "the main stem and the branches."),
    ("museum",
     "The City Museum will reopen on 14 May after a two-year renovation. The new east wing adds four "
     "galleries, including a permanent exhibition on the history of the harbour and a room for touring "
     "shows. Entry to the permanent collection remains free, while the opening exhibition, Maps of the "
     "Known World, costs eight dollars for adults and is free for children under twelve. The museum cafe "
     "has moved to the ground floor of the new wing and now has a terrace overlooking the river."),
]

SUMMARISE = [f"Summarize the following text in two or three sentences.\n\n{text}" for _, text in PASSAGES]

QUOTE = [
    "From the text below, quote the sentence that says when the lamp was electrified. Copy it exactly.\n\n{}",
    "Quote, word for word, the sentences that explain what the angle and the length of the waggle show.\n\n{}",
    "Copy exactly the sentence about the library opening hours from this report.\n\n{}",
    "Repeat the baking instructions from the recipe below exactly as written, starting from 'Shape it'.\n\n{}",
    "Quote the sentence about the seismometers from the text below, word for word.\n\n{}",
    "Copy the instructions in this email about Saturday and Sunday exactly as they are written.\n\n{}",
    "Quote the library's rules about renewing loans and late returns, word for word.\n\n{}",
    "Quote exactly what the text says about why coffee is roasted close to where it is sold.\n\n{}",
    "Copy, word for word, the sentences about race numbers and the water stations.\n\n{}",
    "Quote the sentence about what the telescope discovered in its first five years.\n\n{}",
    "Repeat the watering and staking advice from the text below exactly.\n\n{}",
    "Quote exactly the sentences about ticket prices and the museum cafe.\n\n{}",
]
QUOTE = [q.format(text) for q, (_, text) in zip(QUOTE, PASSAGES)]

ANSWER = [
    "Using only the passage below, answer: who was the first keeper and how did his family get supplies?\n\n{}",
    "According to the passage, how do other bees learn where the flowers are?\n\n{}",
    "Based on the report, what will happen to the Elm Street bridge, and why was the parking fee decision postponed?\n\n{}",
    "According to the recipe, how long should the dough rise in total, and at what temperature is it baked?\n\n{}",
    "Using the passage, describe what happened in the 1786 eruption and what the volcano is doing now.\n\n{}",
    "Read the email and answer: when will the site be offline, and what should staff do on Sunday?\n\n{}",
    "According to the rules below, how many items can a member borrow and what do late returns cost?\n\n{}",
    "From the passage, where does coffee grow best and how long does the fruit take to ripen?\n\n{}",
    "Based on the information below, where and when can runners collect their numbers, and when does the course close?\n\n{}",
    "According to the passage, what is special about the telescope's camera, and how long will the mission last?\n\n{}",
    "Using the text, explain how far apart tomatoes should be planted and how they should be watered.\n\n{}",
    "According to the announcement, what does the new east wing contain and how much is the opening exhibition?\n\n{}",
]
ANSWER = [q.format(text) for q, (_, text) in zip(ANSWER, PASSAGES)]

CODE_EDIT = [
    "Rename the variable `total` to `subtotal` in this function and show the whole function.\n\n"
    "```python\ndef order_total(items, tax_rate):\n    total = 0\n    for item in items:\n        total += item.price * item.quantity\n"
    "    tax = total * tax_rate\n    return total + tax\n```",
    "Add type hints to this function and return the complete code.\n\n"
    "```python\ndef find_user(users, name):\n    for user in users:\n        if user.name == name:\n            return user\n    return None\n```",
    "Fix the off-by-one error in this function and show the corrected function.\n\n"
    "```python\ndef last_n(values, n):\n    result = []\n    for i in range(len(values) - n + 1, len(values)):\n        result.append(values[i])\n    return result\n```",
    "Change this function so that it ignores empty lines, and show the full function.\n\n"
    "```python\ndef count_lines(path):\n    count = 0\n    with open(path) as f:\n        for line in f:\n            count += 1\n    return count\n```",
    "Add a docstring to this function and return the whole code.\n\n"
    "```python\ndef celsius_to_fahrenheit(celsius):\n    return celsius * 9 / 5 + 32\n\n\ndef fahrenheit_to_celsius(fahrenheit):\n"
    "    return (fahrenheit - 32) * 5 / 9\n```",
    "Rewrite this loop as a list comprehension and show the function.\n\n"
    "```python\ndef squares_of_evens(numbers):\n    result = []\n    for n in numbers:\n        if n % 2 == 0:\n            result.append(n * n)\n"
    "    return result\n```",
    "Rename the function `calc` to `average` and update the call, then show the whole program.\n\n"
    "```python\ndef calc(numbers):\n    return sum(numbers) / len(numbers)\n\n\nscores = [70, 85, 90, 64]\nprint(calc(scores))\n```",
    "Make this JavaScript function return 0 for an empty array instead of NaN. Show the complete function.\n\n"
    "```javascript\nfunction mean(values) {\n  let sum = 0;\n  for (const v of values) {\n    sum += v;\n  }\n  return sum / values.length;\n}\n```",
    "Change the default greeting from \"Hello\" to \"Welcome\" and show the whole class.\n\n"
    "```python\nclass Greeter:\n    def __init__(self, name, greeting=\"Hello\"):\n        self.name = name\n        self.greeting = greeting\n\n"
    "    def greet(self):\n        return f\"{self.greeting}, {self.name}!\"\n```",
    "Add error handling so this function returns None when the file does not exist. Show the full function.\n\n"
    "```python\nimport json\n\n\ndef load_config(path):\n    with open(path) as f:\n        return json.load(f)\n```",
    "Convert this function to use an f-string instead of string concatenation, and show the whole function.\n\n"
    "```python\ndef describe(name, age, city):\n    return name + \" is \" + str(age) + \" years old and lives in \" + city + \".\"\n```",
    "Fix the bug in this SQL query so that it only returns active users, and show the full query.\n\n"
    "```sql\nSELECT id, name, email\nFROM users\nWHERE created_at > '2024-01-01'\nORDER BY name;\n```",
]

CHAT = [
    "Tell me a short story about a dragon who is afraid of the dark.",
    "What are some good tips for learning a new language as an adult?",
    "Write a poem about the sea at night.",
    "Explain how airplanes stay in the air.",
    "What should I pack for a week-long camping trip?",
    "Why is the sky blue?",
    "Give me three ideas for a birthday party for a ten-year-old.",
    "What are the benefits of regular exercise?",
    "Describe your ideal weekend.",
    "How do I make a good first impression at a job interview?",
    "Write a short letter to a friend who just moved to a new city.",
    "What is the difference between weather and climate?",
    "Invent a new board game and explain the rules.",
    "What are some ways to save money on groceries?",
]

SETS = {
    "summarise": SUMMARISE,
    "quote": QUOTE,
    "answer": ANSWER,
    "code-edit": CODE_EDIT,
    "chat": CHAT,
}
GROUNDED = ("summarise", "quote", "answer", "code-edit")
UNGROUNDED = ("chat",)
