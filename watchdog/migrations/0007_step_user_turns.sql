-- Number of user-role messages in a step's input (NULL when content is not captured), so
-- the loop detector sees a person re-typing the same words as a new user message.
ALTER TABLE steps ADD COLUMN user_turns INTEGER;
