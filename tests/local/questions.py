"""A question set for the local avatar's built-in answers (no chat endpoint configured).

Three small knowledge texts of the kind a newcomer pastes into the playground (a shop, an event,
a product FAQ), questions a visitor would ask about each, worded as people do rather than with the
text's own words, and the fact a right answer must contain. Then questions asked with nothing
configured at all, which must get a real answer (never the "I don't know" fallback).

Each expectation is a list of fragments that must all appear in the spoken answer (case
insensitive); ``None`` means "nothing in the text answers this": the answer must be the fallback,
not a random sentence.
"""

from __future__ import annotations

SHOP = """Maria's Bakery is a small family bakery in the old town of Ghent.
The shop is owned by Maria Peeters, who opened it in 2009 with her brother Luc.
We are open from 7am to 6pm, Tuesday to Saturday, and from 8am to 1pm on Sunday.
We are closed on Mondays.
You can find us at 12 Korenmarkt, next to the tram stop.
A sourdough loaf costs 4.50 euros and a croissant costs 1.80 euros.
Our best seller is the raisin bread, baked fresh every morning.
We take cards and cash, but not cheques.
Birthday cakes must be ordered at least three days in advance.
Call us on 09 224 51 80 or email hello@mariasbakery.be.
Everything is baked on site, and we have gluten-free bread on Fridays.
Dogs are welcome in the shop.
"""

EVENT = """PyCon Lisbon 2026 takes place on 14 and 15 May 2026.
The conference is held at the Lisbon Congress Centre, near the Belem tower.
Doors open at 8:30am and the first talk starts at 9:15am.
The opening keynote is given by Dr. Ana Costa, a researcher in machine learning.
A regular ticket costs 120 euros, and students pay 40 euros.
Tickets are sold on the website until 1 May.
Lunch and coffee are included in every ticket.
The closing party is on Friday evening at the riverside bar.
There is free wifi for everyone; the network is called PyConGuest.
Childcare is available on both days if you book it a week ahead.
The organiser is the Python Portugal association.
"""

PRODUCT = """The Breeze X2 is a quiet desk fan with three speeds.
It weighs 1.2 kg and stands 35 cm tall.
The battery lasts about 8 hours on the lowest speed.
A full charge takes two hours with the USB-C cable in the box.
The fan comes with a two-year warranty.
To clean the blades, unclip the front grille and wipe them with a dry cloth.
You can return it within 30 days for a full refund.
The Breeze X2 costs 59 dollars.
It is made by Windwell, a company based in Oslo.
The timer can switch the fan off after one, two or four hours.
"""

# (knowledge, question, fragments the answer must contain, or None for "not in the text")
KNOWLEDGE_QUESTIONS: list[tuple[str, str, list[str] | None]] = [
    (SHOP, "Who owns the shop?", ["Maria Peeters"]),
    (SHOP, "When are you open?", ["7am"]),
    (SHOP, "Are you open on Monday?", ["closed on Mondays"]),
    (SHOP, "Where is the bakery?", ["Korenmarkt"]),
    (SHOP, "How much is a croissant?", ["1.80"]),
    (SHOP, "What is the price of a sourdough loaf?", ["4.50"]),
    (SHOP, "Can I pay by card?", ["cards"]),
    (SHOP, "How do I order a birthday cake?", ["three days"]),
    (SHOP, "What is your phone number?", ["09 224 51 80"]),
    (SHOP, "Do you have gluten free bread?", ["gluten-free"]),
    (SHOP, "Can I bring my dog?", ["Dogs are welcome"]),
    (SHOP, "When was the bakery founded?", ["2009"]),
    (SHOP, "What is your most popular bread?", ["raisin"]),
    (SHOP, "Do you sell bicycles?", None),
    (EVENT, "When is the conference?", ["14 and 15 May"]),
    (EVENT, "Where is it held?", ["Congress Centre"]),
    (EVENT, "What time does the first talk start?", ["9:15"]),
    (EVENT, "Who gives the keynote?", ["Ana Costa"]),
    (EVENT, "How much does a ticket cost?", ["120 euros"]),
    (EVENT, "Is there a student discount?", ["students pay 40"]),
    (EVENT, "Is lunch included?", ["Lunch"]),
    (EVENT, "Is there wifi?", ["PyConGuest"]),
    (EVENT, "Who organises the event?", ["Python Portugal"]),
    (EVENT, "Until when can I buy tickets?", ["1 May"]),
    (EVENT, "Can I bring my kids?", ["Childcare"]),
    (EVENT, "Where is the party?", ["riverside bar"]),
    (EVENT, "Is there a dress code?", None),
    (PRODUCT, "How long does the battery last?", ["8 hours"]),
    (PRODUCT, "How much does the fan cost?", ["59 dollars"]),
    (PRODUCT, "How heavy is it?", ["1.2 kg"]),
    (PRODUCT, "How long does it take to charge?", ["two hours"]),
    (PRODUCT, "Is there a warranty?", ["two-year warranty"]),
    (PRODUCT, "How do I clean the blades?", ["grille"]),
    (PRODUCT, "Can I get a refund?", ["30 days"]),
    (PRODUCT, "Who makes the Breeze X2?", ["Windwell"]),
    (PRODUCT, "How many speeds does it have?", ["three speeds"]),
    (PRODUCT, "Does it have a timer?", ["four hours"]),
    (PRODUCT, "Is it waterproof?", None),
]

# asked with no knowledge and no chat endpoint (avatar Ada): fragments a good answer contains
BUILTIN_QUESTIONS: list[tuple[str, list[str]]] = [
    ("Hello! Who are you?", ["Hello", "Ada"]),
    ("Hi", ["Ada"]),
    ("Good morning!", ["Ada"]),
    ("Who are you?", ["Ada", "avatarbot"]),
    ("What's your name?", ["Ada"]),
    ("What can you do?", ["Ask", "Say"]),
    ("help", ["knowledge box", "/avatar context"]),
    ("Thanks!", ["welcome"]),
    ("Thank you so much", ["welcome"]),
    ("How are you?", ["well"]),
    ("How do I connect an LLM?", ["LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY"]),
    ("Can I use my own language model?", ["OpenAI-compatible"]),
    ("How do I give you knowledge?", ["knowledge box", "/avatar context"]),
    ("What is avatarbot?", ["Discord", "Slack", "/avatar start"]),
    ("How do I start a session in Discord?", ["/avatar start"]),
    ("Which vendors are supported?", ["A2E", "AKool", "LiveAvatar"]),
    ("What's the difference between ask and say?", ["Ask", "Say"]),
    ("How do credits work?", ["credits"]),
    ("What is the viewer link?", ["viewer"]),
    ("Bye!", ["Goodbye"]),
    ("Are you a robot?", ["not a person"]),
    ("What should I ask you?", ["knowledge"]),
    ("What does Say do?", ["exactly as written"]),
    ("How much does it cost?", ["credits"]),
]

# no knowledge, not small talk and not about avatarbot: the fallback, which says what to do next
UNANSWERABLE = ["What is the meaning of life?", "Who won the match yesterday?"]

# Written after the retrieval was tuned on the questions above and never tuned on: how well the
# scoring carries over to a text it has not seen (reported, with a lower bar, in the test).
LIBRARY = """The Northgate Public Library is run by the city of Leeds.
The head librarian is Tom Ashworth.
The library is open from 10am to 8pm on weekdays and from 10am to 4pm on Saturdays.
It is on the second floor of the Northgate Centre, at 40 Albion Street.
Membership is free for everyone who lives or works in Leeds.
You can borrow up to twelve books at a time for three weeks.
A late return costs 20 pence per book per day.
Printing costs 10 pence a page in black and white.
There are study rooms, which you can book online or at the front desk.
Story time for children is every Wednesday at 11am.
"""

HELD_OUT: list[tuple[str, str, list[str] | None]] = [
    (LIBRARY, "Who is the head librarian?", ["Tom Ashworth"]),
    (LIBRARY, "What are the opening hours?", ["10am to 8pm"]),
    (LIBRARY, "Where is the library?", ["Albion Street"]),
    (LIBRARY, "How much does membership cost?", ["free"]),
    (LIBRARY, "How many books can I borrow?", ["twelve books"]),
    (LIBRARY, "How long can I keep a book?", ["three weeks"]),
    (LIBRARY, "What is the fine for a late book?", ["20 pence"]),
    (LIBRARY, "How much is printing?", ["10 pence"]),
    (LIBRARY, "Can I reserve a study room?", ["study rooms"]),
    (LIBRARY, "When is story time?", ["Wednesday"]),
    (LIBRARY, "Is the library open on Sunday?", ["Saturdays"]),
    (LIBRARY, "Do you lend DVDs?", None),
]
