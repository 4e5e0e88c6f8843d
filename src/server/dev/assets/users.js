// The simulated users, kept in this browser (localStorage): ids and the names the bot
// sees as contact.name. The server only ever sees the id and name of each message.

const KEY = "parlance.dev.users";

/** A WhatsApp id: the phone number in E.164 without +, 1 to 15 digits (as the API checks). */
export function validUserId(id) {
  return typeof id === "string" && /^[0-9]{1,15}$/.test(id);
}

export function loadUsers() {
  let users = [];
  try {
    const raw = JSON.parse(localStorage.getItem(KEY) || "[]");
    if (Array.isArray(raw)) {
      users = raw
        .filter((u) => u && validUserId(u.id))
        .map((u) => ({ id: u.id, name: typeof u.name === "string" ? u.name.slice(0, 40) : "" }));
    }
  } catch {
    // A damaged entry: start again with the default user.
  }
  return users.length ? users : [{ id: "15550001111", name: "Maria" }];
}

export function saveUsers(users) {
  localStorage.setItem(KEY, JSON.stringify(users));
}

/** The next free id of the 1555000xxxx kind, for the "add user" form. */
export function suggestUserId(users) {
  for (let n = 1111; n < 10000; n += 1111) {
    const id = `1555000${String(n).padStart(4, "0")}`;
    if (!users.some((u) => u.id === id)) return id;
  }
  return `1555${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;
}
