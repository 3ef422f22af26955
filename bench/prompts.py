"""The benchmark's chat prompts: two timing prompts (short and ~800 tokens) and a varied fidelity set.

Every prompt is a full message list with Parley's own system prompt, so the rendered text is what the
engine really feeds the model. Replies are asked to be long, so that greedy decoding rarely stops early.
"""

from __future__ import annotations

from engine.runtime.settings import DEFAULT_SYSTEM_PROMPT

Messages = list[dict[str, str]]


def _chat(*turns: str) -> Messages:
    """System prompt, then alternating user / assistant turns (the last one is the user's)."""
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


# ~800 tokens once rendered: long, varied prose (not a repeated paragraph, which would let a model
# copy and would not look like a real pasted document).
_MEETING_NOTES = """\
Weekly planning meeting, riverside community garden, Tuesday evening.

Present: Amina (chair), Jonas (treasurer), Priya (volunteer coordinator), Tomasz (tools and shed), \
Helen (schools programme), and two new members, Carlos and Mei, who joined after the open day.

1. Finances. Jonas reported that the spring plant sale raised a little over nine hundred pounds, \
about a third more than last year, mostly thanks to the tomato and chilli seedlings that Priya's \
volunteers grew in the greenhouse. The water bill has gone up again because the old standpipe near \
the gate leaks whenever the pressure is high; the council says it is our responsibility because it \
is inside the fence. A plumber quoted two hundred and forty pounds to replace it. Jonas proposed that \
we pay for it from the plant sale money rather than the reserve, and nobody objected. He also \
reminded everyone that the insurance renewal is due at the end of next month and that the insurer \
now wants a written risk assessment for the pond.

2. Volunteers. Priya said Saturday mornings are busy but weekday sessions are struggling: on two \
Wednesdays in a row only one person turned up, which is not safe when the strimmer or the shredder is \
in use. She suggested a simple rota in the shared calendar, with at least two named people per \
session, and a rule that power tools stay locked away if fewer than two volunteers are present. \
Carlos offered to help with Wednesdays because he works from home. Mei asked whether there is any \
induction for new people; Priya admitted it is informal and agreed to write a one-page welcome sheet \
covering the shed, the compost bays, first aid, and who to call in an emergency.

3. Tools and shed. Tomasz has sharpened the shears and replaced two broken spade handles, but the \
wheelbarrow tyres are flat again and the lock on the shed door sticks in wet weather. He would like \
to buy a puncture-proof tyre and a padlock with a weather cover, roughly sixty pounds in total. He \
also pointed out that people keep putting tools back wet and dirty, so they rust; he will put up a \
sign and a brush by the door. There was a long discussion about whether to lend tools to neighbours. \
In the end we agreed to lend hand tools only, with a notebook to record who has what.

4. Schools programme. Helen said the primary school wants to bring three classes during the summer \
term, about thirty children each time, to plant beans and look at the pond. The teachers will do \
their own risk assessment, but they need our pond assessment too, which connects with Jonas's \
insurance point. Helen also wants a small shaded area for the children to sit and eat lunch; Tomasz \
thinks the old pallets behind the compost bays could become benches. The school may donate a gazebo.

5. Any other business. The neighbours at number twelve complained about bonfire smoke last month. \
Amina reminded everyone that bonfires are not allowed and that woody waste should go through the \
shredder or into the council green bin. Mei asked whether we could start a seed library; people \
liked the idea, and she will look at how other gardens run theirs.

6. Dates. The summer open day will be on the second Saturday of July, with a plant stall, a cake table \
and garden tours every hour; Amina will ask the local paper to mention it. The autumn clear-up is pencilled \
in for the last weekend of October, when we also need to empty and turn the oldest compost bay.

Next meeting in two weeks, same time, in the greenhouse if it rains."""

_CODE = """\
def moving_average(values, window):
    result = []
    for i in range(len(values)):
        if i + 1 < window:
            result.append(None)
            continue
        total = 0
        for j in range(i + 1 - window, i + 1):
            total += values[j]
        result.append(total / window)
    return result


def find_spikes(values, window=5, factor=2.0):
    averages = moving_average(values, window)
    spikes = []
    for i, (value, average) in enumerate(zip(values, averages)):
        if average is not None and value > factor * average:
            spikes.append(i)
    return spikes"""

_COMPLAINT = """\
Hello, I ordered a standing desk from your website three weeks ago (order 48213). The delivery was \
supposed to take five working days, but it arrived after twelve, and only after I had phoned twice. \
When I opened the box, one of the legs was bent and the control panel had a cracked corner. I sent \
photos to your support address the same evening and got an automatic reply saying someone would \
contact me within two days. Nobody did. The desk wobbles when raised and I am worried the motor will \
fail. I work from home, so I have been using the kitchen table for three weeks, which is hurting my \
back. I would like either a replacement leg and control panel fitted by a technician, or a full \
refund including the delivery charge. I also think some compensation for the delay is fair."""

SHORT: Messages = _chat("Write a short story about a lighthouse keeper who finds a message in a bottle.")
LONG: Messages = _chat(
    "Here are the notes from our last meeting.\n\n"
    + _MEETING_NOTES
    + "\n\nSummarise these notes in five bullet points, then list every action item with the person responsible."
)

# The fidelity set: the two timing prompts, long inputs (document, code, complaint, multi-turn) and short
# open-ended questions of different kinds (story, explanation, list, maths, table, email).
FIDELITY: list[Messages] = [
    SHORT,
    LONG,
    _chat(f"What does this Python code do, and how could it be made faster?\n\n```python\n{_CODE}\n```"),
    _chat(f"You are the support agent. Write a helpful reply to this customer.\n\n{_COMPLAINT}"),
    _chat(
        "I am planning a four-day trip to Lisbon in October.",
        "That sounds lovely! October is a good time to visit: it is still warm and less crowded than summer. "
        "Do you have any interests, such as food, history, museums or beaches?",
        "I like food and history, and I do not want to rent a car.",
        "Great. Lisbon is very walkable, and trams, trains and the metro cover the main sights. "
        "Belem, the Alfama district and a day trip to Sintra are all easy without a car.",
        "Please give me a day-by-day plan with places to eat.",
    ),
    _chat("Explain step by step how a vaccine trains the immune system."),
    _chat("Give me a recipe for a vegetarian lasagna, with a list of ingredients and numbered steps."),
    _chat(
        "A train leaves at 9:40 and travels 210 km at an average speed of 84 km/h. "
        "What time does it arrive? Explain your reasoning."
    ),
    _chat("What are the differences between TCP and UDP? Answer with a table and then a short explanation."),
    _chat("Write a polite email to my landlord asking them to fix the heating, which stopped working last week."),
    _chat("Tell me about the history of the printing press and why it mattered."),
    _chat("List ten practical tips for learning a new language, with one sentence of explanation each."),
]

# What people ask a community assistant, one short prompt each: facts and explanations, writing and
# e-mails, advice, maths and code, summaries of short pasted texts, and French. With the twelve above
# they make the larger fidelity set (``bench.run --fidelity-only``): 60 prompts, ~3,800 scored positions,
# enough to put a confidence interval on the difference between two engines.
_MORE = [
    "Why do we have seasons on Earth? Explain it to a twelve-year-old.",
    "How does a refrigerator keep food cold? Describe each part of the cycle.",
    "What caused the fall of the Western Roman Empire? Give several reasons.",
    "Explain what inflation is and why central banks raise interest rates to fight it.",
    "How do bees make honey? Walk me through it from flower to jar.",
    "What is the difference between weather and climate? Give examples.",
    "Describe how a bill becomes a law in a parliamentary democracy.",
    "Explain photosynthesis, then say why it matters for the air we breathe.",
    "What is a black hole, and how do astronomers find one if light cannot escape it?",
    "How does public key cryptography let two strangers share a secret?",
    "Compare electric cars and petrol cars on cost, range and environmental impact.",
    "What should I check before buying a second-hand bicycle?",
    "Give me a weekly workout plan for a beginner who has thirty minutes a day.",
    "How can a small community garden raise money for new tools? Suggest several ideas.",
    "Write a short speech welcoming new members to a chess club.",
    "Write a poem about the sea in winter.",
    "Write the opening paragraph of a mystery novel set in a snowed-in mountain hotel.",
    "Draft an announcement for our Discord server: the monthly game night moves from Friday to Saturday.",
    "Write an email to a colleague asking to move our Thursday meeting to next week, and suggest two times.",
    "Write a reply declining a job offer politely while keeping the door open for the future.",
    "Write a thank-you note to a neighbour who watered my plants while I was away.",
    "Draft a message to a club's members reminding them that annual fees are due by the end of the month.",
    "Reply to this e-mail: 'Hi, could you send me the slides from yesterday's talk, and tell me when the "
    "recording will be online? Thanks, Sofia'",
    "Summarise in three sentences: The town council met on Monday to discuss the new cycle lanes. Residents "
    "of Mill Street objected to losing parking spaces, while the cycling club said the lanes would make the "
    "school run safer. The council agreed to a six-month trial on one side of the street, with a survey of "
    "shop owners before and after.",
    "Summarise the main points: Our library will close for renovation from 3 to 28 March. During that time, "
    "books can be returned to the box outside the post office, loans are extended automatically, and the "
    "children's reading club will meet in the community hall on Wednesdays at four.",
    "Turn these notes into a tidy list of action items: call the caterer about numbers, Sam books the hall, "
    "ask Leila if she can do the sound, print posters by Friday, someone check the insurance.",
    "A recipe needs 250 g of flour for 12 biscuits. How much flour do I need for 30 biscuits? Show the steps.",
    "If a shirt costs 40 euros after a 20% discount, what was the original price? Explain.",
    "What is the probability of rolling two sixes with two dice? Explain the reasoning.",
    "Convert 72 degrees Fahrenheit to Celsius and explain the formula.",
    "Solve 3x + 7 = 25 and check the answer.",
    "Write a Python function that checks whether a string is a palindrome, ignoring spaces and case, and explain it.",
    "Explain the difference between a list and a tuple in Python, with examples.",
    "What does this SQL do? SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
    "Write a shell command that finds all .log files older than seven days and deletes them, and explain it.",
    "Explain what a race condition is and how a lock prevents it.",
    "What are the pros and cons of working from home? Give a balanced answer.",
    "How do I make a good cup of pour-over coffee?",
    "Give me five questions to ask at the end of a job interview, and why each is useful.",
    "How do I politely ask a noisy neighbour to keep it down?",
    "Plan a two-hour workshop that teaches teenagers how to spot misinformation online.",
    "What are the rules of chess for castling?",
    "Explique-moi simplement comment fonctionne un moteur électrique.",
    "Écris un courriel à mon propriétaire pour lui signaler une fuite d'eau dans la salle de bain.",
    "Quels sont les avantages et les inconvénients du télétravail ? Réponds en quelques paragraphes.",
    "Résume l'histoire de la Révolution française en quelques phrases.",
    "Donne-moi cinq idées d'activités pour un club de lecture.",
    "Comment préparer une bonne soupe à l'oignon ? Donne les étapes.",
]
FIDELITY_LARGE: list[Messages] = [*FIDELITY, *(_chat(text) for text in _MORE)]
